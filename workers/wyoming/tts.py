"""tts: a Wyoming `synthesize` (or a synthesize-start/-chunk/-stop stream) as one reply of a
conversation of the endpoint, spoken by the tts worker.

The text goes on the bus as a reply (llm.reply-started, one llm.reply-sentence per complete
sentence as soon as it is complete, llm.reply-done), exactly what the llm would publish, so
the tts worker synthesizes the first sentence while the client is still sending the rest.
Its audio comes back per sentence: for a stream, each sentence is one audio-start ..
audio-stop (as wyoming-piper does) and `synthesize-stopped` ends it; a plain `synthesize` is
one audio-start .. audio-stop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event as WyEvent
from wyoming.tts import SynthesizeStopped, SynthesizeVoice

from schemas import (
    ControlError,
    Event,
    Interrupt,
    ReplyDone,
    ReplySentence,
    ReplyStarted,
    SentenceDone,
    TtsAudioChunk,
    TtsDone,
    TtsStarted,
    derive_id,
    new_id,
)
from workers.wyoming.bridge import PRODUCER, Bridge
from workers.wyoming.config import WyomingSettings
from workers.wyoming.errors import RequestError

Send = Callable[[WyEvent], Awaitable[None]]
SILENT_FORMAT = {"rate": 22_050, "width": 2, "channels": 1}

#: A sentence ends at . ! ? or … (closing quotes or brackets included) before a space.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*\s+")


def check_voice(voice: SynthesizeVoice | None, settings: WyomingSettings) -> None:
    """Refuse a voice or language the tts worker does not speak."""
    if voice is None:
        return
    if voice.name and voice.name not in (settings.voice, f"piper:{settings.voice}"):
        raise RequestError(
            "unknown-voice", f"unknown voice {voice.name!r}; this server speaks {settings.voice!r}"
        )
    if voice.language:
        wanted = voice.language.replace("-", "_").lower()
        known = [v.lower() for v in settings.voice_language_list()]
        if wanted not in known and wanted.split("_")[0] not in known:
            raise RequestError(
                "unknown-voice",
                f"no voice for language {voice.language!r}; languages: {', '.join(known)}",
            )


class SentenceSplitter:
    """Text arriving in pieces -> complete sentences as soon as each one ends."""

    def __init__(self) -> None:
        self.buffer = ""

    def add(self, text: str) -> list[str]:
        self.buffer += text
        out = []
        while True:
            m = _SENTENCE_END.search(self.buffer)
            if m is None:
                return out
            sentence, self.buffer = self.buffer[: m.end()].strip(), self.buffer[m.end() :]
            if sentence:
                out.append(sentence)

    def finish(self) -> list[str]:
        rest, self.buffer = self.buffer.strip(), ""
        return [rest] if rest else []


class Synthesis:
    """One synthesize request (plain or streamed): text in, audio out."""

    def __init__(
        self,
        bridge: Bridge,
        settings: WyomingSettings,
        send: Send,
        session: str,
        voice: SynthesizeVoice | None,
        streaming: bool,
    ) -> None:
        check_voice(voice, settings)
        self.bridge = bridge
        self.settings = settings
        self.send = send
        self.session = session
        self.streaming = streaming
        self.conversation_id = new_id()
        self.utterance_id = new_id()
        self._span, self._ctx = bridge.span("synthesize", self.conversation_id, self.utterance_id)
        self.splitter = SentenceSplitter()
        self.sentences: list[str] = []
        self.text = ""
        self.finished = False
        self.queue = bridge.listen(self.conversation_id)
        self.result: asyncio.Task[None] | None = None
        self.started: ReplyStarted | None = None
        self.done = False
        """The tts worker finished the reply (nothing to stop if the client goes now)."""
        self.cancelled = False

    def _base(self) -> dict[str, str]:
        return {
            "endpoint": self.bridge.endpoint,
            "conversation_id": self.conversation_id,
            "utterance_id": self.utterance_id,
            "producer": PRODUCER,
        }

    async def _publish(self, event: Event) -> None:
        await self.bridge.bus.publish(event, ctx=self._ctx)

    async def begin(self) -> None:
        self.result = asyncio.create_task(self._relay())
        await self.bridge.bind(self.conversation_id, "speaker", self.session)
        self.started = ReplyStarted(
            event_id=derive_id(self.utterance_id, "reply-started"), **self._base()
        )
        await self._publish(self.started)

    def check_length(self, text: str) -> None:
        if len(self.text) + len(text) > self.settings.max_text_chars:
            raise RequestError(
                "text-too-long",
                f"text longer than {self.settings.max_text_chars} characters "
                "(WYOMING_MAX_TEXT_CHARS)",
            )

    async def add(self, text: str) -> None:
        self.check_length(text)
        self.text += text
        for sentence in self.splitter.add(text):
            await self._sentence(sentence)

    async def _sentence(self, text: str) -> None:
        i = len(self.sentences)
        self.sentences.append(text)
        await self._publish(
            ReplySentence(
                event_id=derive_id(self.utterance_id, "sentence", i),
                seq=i,
                text=text,
                index=i,
                **self._base(),
            )
        )

    async def finish(self) -> None:
        """All text is in: the last sentence and reply-done; the audio keeps coming."""
        for sentence in self.splitter.finish():
            await self._sentence(sentence)
        if not self.sentences:
            raise RequestError("empty-text", "nothing to synthesize (empty text)")
        self.finished = True
        await self._publish(
            ReplyDone(
                event_id=derive_id(self.utterance_id, "reply-done"),
                text=self.text.strip(),
                sentences=len(self.sentences),
                tokens=0,
                **self._base(),
            )
        )

    async def _relay(self) -> None:
        """The tts worker's audio, forwarded as it comes."""
        fmt: dict[str, int] = {}
        open_sentence: int | None = None
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(self.queue.get(), self._remaining())
                except TimeoutError:
                    raise RequestError(
                        "timeout",
                        f"no audio within {self.settings.timeout_s:g} s (is the tts worker "
                        "running?)",
                    ) from None
                if ev.utterance_id != self.utterance_id:
                    continue
                if isinstance(ev, TtsStarted):
                    fmt = {"rate": ev.rate, "width": ev.width, "channels": ev.channels}
                elif isinstance(ev, TtsAudioChunk):
                    fmt = fmt or {"rate": ev.rate, "width": ev.width, "channels": ev.channels}
                    if open_sentence is None:
                        await self.send(AudioStart(**fmt).event())
                        open_sentence = ev.sentence_index
                    await self.send(AudioChunk(audio=ev.audio, **fmt).event())
                elif isinstance(ev, SentenceDone) and self.streaming:
                    if open_sentence is not None:
                        await self.send(AudioStop().event())
                        open_sentence = None
                elif isinstance(ev, TtsDone):
                    self.done = True
                    if ev.interrupted:
                        raise RequestError("tts-interrupted", "synthesis was interrupted")
                    if self.streaming:
                        if open_sentence is not None:
                            await self.send(AudioStop().event())
                        await self.send(SynthesizeStopped().event())
                    else:
                        if open_sentence is None:  # a reply with no audio at all
                            await self.send(AudioStart(**(fmt or SILENT_FORMAT)).event())
                        await self.send(AudioStop().event())
                    return
                elif isinstance(ev, ControlError):
                    raise RequestError(f"{ev.failed_stage}-{ev.code}", ev.message)
        finally:
            self.bridge.unlisten(self.conversation_id, self.queue)
            self._span.end()

    def _remaining(self) -> float:
        return self.settings.timeout_s

    async def cancel(self) -> None:
        """The request ends early (bad input, the client went away): the reply is closed and
        the tts worker told to stop, so it does not synthesize for no one. Once: the
        connection's end and the request's own failure may both get here."""
        if self.cancelled:
            return
        self.cancelled = True
        if self.result is not None and not self.result.done():
            self.result.cancel()
        self.bridge.unlisten(self.conversation_id, self.queue)
        if self.started is None or self.done:
            return
        # The interrupt first: the tts stops at once, even if it already has every sentence.
        await self._publish(
            Interrupt(
                event_id=derive_id(self.utterance_id, "interrupt"), reason="user", **self._base()
            )
        )
        if not self.finished:
            self.finished = True
            await self._publish(
                ReplyDone(
                    event_id=derive_id(self.utterance_id, "reply-done"),
                    text=self.text.strip(),
                    sentences=len(self.sentences),
                    tokens=0,
                    finish_reason="interrupted",
                    **self._base(),
                )
            )
