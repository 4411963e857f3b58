"""The speaker worker: plays reply audio and records exactly how much the listener heard.

Consumers:
- "speaker": tts.audio-chunk, tts.sentence-done, tts.done (stream order: a sentence's end
  and the reply's end arrive after their audio);
- "speaker-control": control.interrupt and mic.voice-started, never queued behind audio.
  This worker is the one that knows the assistant is audible, so it decides barge-in: the
  user starting to speak over a reply of the same conversation stops it and publishes
  control.interrupt for the llm and tts;
- "speaker-mic" (SPEAKER_CONVERSATION_WAV=1 only): mic.audio-chunk for the conversation WAV.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, field

from opentelemetry import trace

from schemas import (
    ControlError,
    Event,
    EventDecodeError,
    Interrupt,
    MicAudioChunk,
    PlaybackDone,
    PlaybackStarted,
    SentenceDone,
    TtsAudioChunk,
    TtsDone,
    VoiceStarted,
    VoiceStopped,
    decode,
    derive_id,
    subject_filter,
)
from workers.runtime.audio import resample_pcm16
from workers.runtime.bus import Bus, Consumer, Delivery
from workers.runtime.config import Settings
from workers.runtime.endpoint.sinks import DeviceSink, Output, Sink, WavSink
from workers.runtime.endpoint.tape import ConversationTape
from workers.runtime.service import Worker
from workers.runtime.telemetry import tracer
from workers.speaker.config import SpeakerSettings, get_speaker_settings

log = logging.getLogger("voicebus.speaker")
_tracer = tracer("workers.speaker")
MAX_ENDED = 4096
TAPE_RATE = 22_050
"""Rate of conversation.wav, Hertz (the tts default: replies are not resampled)."""


@dataclass
class Playback:
    """One reply on its way to the listener."""

    conversation_id: str
    utterance_id: str
    rate: int
    first_chunk: TtsAudioChunk
    output: Output | None = None
    """Opened when the reply's turn to play comes (earlier replies of the conversation first)."""
    pending: list[bytes] = field(default_factory=list)
    samples: int = 0
    last_seq: int = -1
    marks: list[tuple[int, int]] = field(default_factory=list)
    """(sentence_index, first sample) in play order."""
    sentence_end: dict[int, int] = field(default_factory=dict)
    tts_done: TtsDone | None = None
    done_delivery: Delivery | None = None
    keep_alive: asyncio.Task[None] | None = None
    """The tts.done message, acked only once playback-done is published."""
    started: bool = False
    started_at: float = 0.0
    """Monotonic time playback began (for the conversation tape)."""
    finished: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    span: trace.Span | None = None
    task: asyncio.Task[None] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.conversation_id, self.utterance_id)

    def heard(self, played: int) -> tuple[int, int, float]:
        """(sentences heard to their end, sentence playing at `played`, ms into it)."""
        complete = sum(1 for end in self.sentence_end.values() if end <= played)
        if played <= 0 or not self.marks:
            return complete, -1, 0.0
        index, start = next((i, s) for i, s in reversed(self.marks) if s <= played - 1)
        return complete, index, 1000.0 * (played - start) / self.rate


def make_sink(speaker: SpeakerSettings, settings: Settings) -> Sink:
    if speaker.sink == "device":
        return DeviceSink(speaker.device)
    return WavSink(settings.data_dir / "replies", realtime=speaker.realtime)


class SpeakerWorker(Worker):
    name = "speaker"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        speaker: SpeakerSettings | None = None,
        sink: Sink | None = None,
    ) -> None:
        super().__init__(bus, settings)
        self.speaker = speaker or get_speaker_settings()
        self.sink = sink or make_sink(self.speaker, settings)
        self.playbacks: dict[tuple[str, str], Playback] = {}
        self.order: dict[str, collections.deque[Playback]] = collections.defaultdict(
            collections.deque
        )
        self.ended: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self.tapes: dict[str, ConversationTape] = {}

    def consumers(self) -> list[Consumer]:
        consumers = [
            self.bus.consumer(
                "speaker",
                [
                    subject_filter(event_type=TtsAudioChunk.type),
                    subject_filter(event_type=SentenceDone.type),
                    subject_filter(event_type=TtsDone.type),
                ],
                handler=self.handle,
                ack_wait=self.speaker.ack_wait_s,
            ),
            self.bus.consumer(
                "speaker-control",
                [
                    subject_filter(event_type=Interrupt.type),
                    subject_filter(event_type=VoiceStarted.type),
                ],
                handler=self.handle_control,
                batch=16,
            ),
        ]
        if self.speaker.conversation_wav:
            consumers.append(
                self.bus.consumer(
                    "speaker-mic",
                    [
                        subject_filter(event_type=MicAudioChunk.type),
                        subject_filter(event_type=VoiceStopped.type),
                    ],
                    handler=self.handle_mic,
                )
            )
        return consumers

    async def aclose(self) -> None:
        for pb in list(self.playbacks.values()):
            if pb.task is not None:
                pb.task.cancel()
            if pb.output is not None:
                pb.output.close()
        for tape in self.tapes.values():
            tape.save()

    # -- handlers ------------------------------------------------------------------------

    async def handle(self, event: Event, delivery: Delivery) -> None:
        if isinstance(event, TtsAudioChunk):
            self._on_chunk(event, delivery)
        elif isinstance(event, SentenceDone):
            pb = self.playbacks.get((event.conversation_id, event.utterance_id))
            if pb is not None:
                pb.sentence_end[event.sentence_index] = pb.samples
        elif isinstance(event, TtsDone):
            key = (event.conversation_id, event.utterance_id)
            pb = self.playbacks.get(key)
            if pb is not None:
                # Acked when the reply has been heard: a speaker that dies mid-playback gets
                # it back after restart, and the turn still ends (see _nothing_played).
                delivery.defer()
                pb.done_delivery = delivery
                pb.tts_done = event
                pb.changed.set()
                pb.keep_alive = asyncio.create_task(self._keep_alive(pb, delivery))
            elif key not in self.ended:
                await self._nothing_played(event)

    async def handle_control(self, event: Event, delivery: Delivery) -> None:
        if isinstance(event, VoiceStarted):
            await self._on_voice_started(event)
        elif isinstance(event, Interrupt):
            key = (event.conversation_id, event.utterance_id)
            pb = self.playbacks.get(key)
            if pb is None:
                self._mark_ended(key)  # audio still on its way is dropped
                return
            await self._finish(pb, derive_id(event.event_id, "playback-done"), interrupted=True)

    async def handle_mic(self, event: Event, delivery: Delivery) -> None:
        tape = self._tape(event.conversation_id)
        if isinstance(event, MicAudioChunk):
            tape.user_audio(event.utterance_id, event.offset_ms, event.audio, event.rate)
        elif isinstance(event, VoiceStopped):
            await asyncio.to_thread(tape.save)

    # -- playback ------------------------------------------------------------------------

    def _on_chunk(self, c: TtsAudioChunk, delivery: Delivery) -> None:
        key = (c.conversation_id, c.utterance_id)
        if key in self.ended:
            return
        pb = self.playbacks.get(key)
        if pb is None:
            pb = Playback(c.conversation_id, c.utterance_id, c.rate, c)
            pb.span = _tracer.start_span(
                "speaker.playback",
                context=delivery.context,
                attributes={
                    "speaker.sink": self.sink.kind,
                    "voice.conversation_id": c.conversation_id,
                    "voice.utterance_id": c.utterance_id,
                },
            )
            self.playbacks[key] = pb
            queue = self.order[c.conversation_id]
            queue.append(pb)
            if len(queue) == 1:
                self._activate(pb)
        if c.seq <= pb.last_seq:
            return  # redelivered
        pb.last_seq = c.seq
        pcm = c.audio if c.rate == pb.rate else resample_pcm16(c.audio, c.rate, pb.rate)
        if not pb.marks or pb.marks[-1][0] != c.sentence_index:
            pb.marks.append((c.sentence_index, pb.samples))
        pb.samples += len(pcm) // 2
        if pb.output is not None:
            pb.output.write(pcm)
        else:
            pb.pending.append(pcm)
        pb.changed.set()

    def _activate(self, pb: Playback) -> None:
        pb.output = self.sink.open(pb.rate, pb.conversation_id, pb.utterance_id)
        pb.started_at = time.monotonic()
        for pcm in pb.pending:
            pb.output.write(pcm)
        pb.pending.clear()
        pb.task = asyncio.create_task(self._watch(pb))

    async def _watch(self, pb: Playback) -> None:
        """Publish playback-started at the first heard sample and playback-done at the last."""
        out = pb.output
        assert out is not None
        # A device's clock is only visible by polling it (the WAV clock starts at once).
        while out.played() == 0 and not pb.finished:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        if pb.finished:
            return
        pb.started = True
        await self.bus.publish(
            PlaybackStarted(
                event_id=derive_id(pb.first_chunk.event_id, "playback-started"),
                conversation_id=pb.conversation_id,
                utterance_id=pb.utterance_id,
                producer=self.worker_id,
                sink=self.sink.kind,
            )
        )
        if pb.span is not None:
            latency_ms = 1000.0 * (time.time() - pb.first_chunk.ts)
            pb.span.set_attribute("speaker.first_audio_latency_ms", round(latency_ms, 3))
        while not pb.finished:
            played, queued = out.played(), out.queued()
            if played < queued:
                await asyncio.sleep((queued - played) / pb.rate)
            elif pb.tts_done is not None:
                event_id = derive_id(pb.tts_done.event_id, "playback-done")
                await self._finish(pb, event_id, interrupted=False)
            else:
                pb.changed.clear()
                await pb.changed.wait()

    async def _finish(self, pb: Playback, event_id: str, interrupted: bool) -> None:
        if pb.finished:
            return
        pb.finished = True  # before any await: one finish per reply
        pb.changed.set()
        played = 0
        if pb.output is not None:
            played = pb.output.halt() if interrupted else pb.output.played()
        complete, last_index, last_ms = pb.heard(played)
        played_ms = 1000.0 * played / pb.rate
        path = getattr(pb.output, "path", None)
        # Stamped now: ts is the moment the audio stopped, not when the file was written.
        ended = PlaybackDone(
            event_id=event_id,
            conversation_id=pb.conversation_id,
            utterance_id=pb.utterance_id,
            producer=self.worker_id,
            played_ms=round(played_ms, 3),
            interrupted=interrupted,
            sentences_heard=complete,
            last_sentence_index=last_index,
            last_sentence_played_ms=round(last_ms, 3),
            wav=str(path) if path else "",
        )
        if pb.output is not None:
            heard = getattr(pb.output, "heard_pcm", None)
            if self.speaker.conversation_wav and heard is not None:
                self._tape(pb.conversation_id).reply_audio(pb.started_at, heard(), pb.rate)
            # The reply's WAV exists before anyone reads its path from playback-done.
            await asyncio.to_thread(pb.output.close)
        await self.bus.publish(ended)
        if pb.done_delivery is not None:
            await pb.done_delivery.ack()
        if pb.span is not None:
            pb.span.set_attribute("speaker.played_ms", round(played_ms, 3))
            pb.span.set_attribute("speaker.interrupted", interrupted)
            pb.span.set_attribute("speaker.sentences_heard", complete)
            pb.span.end()
        log.info(
            "playback done",
            extra={
                "utterance": pb.utterance_id,
                "played_ms": round(played_ms),
                "interrupted": interrupted,
            },
        )
        self._mark_ended(pb.key)
        self.playbacks.pop(pb.key, None)
        queue = self.order[pb.conversation_id]
        with contextlib.suppress(ValueError):
            queue.remove(pb)
        if queue and queue[0].output is None:
            self._activate(queue[0])
        elif not queue:
            self.order.pop(pb.conversation_id, None)
        if self.speaker.conversation_wav:
            await asyncio.to_thread(self._tape(pb.conversation_id).save)

    async def _keep_alive(self, pb: Playback, delivery: Delivery) -> None:
        while not pb.finished and not self.stopping.is_set():
            await delivery.in_progress()
            await asyncio.sleep(self.speaker.ack_wait_s / 3)

    async def _was_playing(self, done: TtsDone) -> bool:
        """Whether an earlier speaker process had started playing this reply (and died)."""
        subject = subject_filter(done.conversation_id, PlaybackStarted.type)
        try:
            last = await self.bus.js.get_last_msg(self.bus.stream, subject)
        except Exception:  # not found, or the stream is unreachable: assume not
            return False
        try:
            return decode(last.data).utterance_id == done.utterance_id
        except EventDecodeError:
            return False

    async def _nothing_played(self, done: TtsDone) -> None:
        """A reply this process has no audio for still ends. Either there was none (empty, or
        all of it interrupted before it got here): the record says nothing was heard. Or an
        earlier speaker process was playing it when it died: how much was heard is unknown,
        and the turn ends with an error that says so."""
        self._mark_ended((done.conversation_id, done.utterance_id))
        if await self._was_playing(done):
            await self.bus.publish(
                ControlError(
                    event_id=derive_id(done.event_id, "speaker-restarted"),
                    conversation_id=done.conversation_id,
                    utterance_id=done.utterance_id,
                    producer=self.worker_id,
                    failed_stage="speaker",
                    code="speaker-restarted",
                    message="the speaker stopped while this reply was playing; how much of "
                    "it was heard is unknown",
                )
            )
            return
        await self.bus.publish(
            PlaybackDone(
                event_id=derive_id(done.event_id, "playback-done"),
                conversation_id=done.conversation_id,
                utterance_id=done.utterance_id,
                producer=self.worker_id,
                played_ms=0.0,
                interrupted=done.interrupted,
            )
        )

    def _mark_ended(self, key: tuple[str, str]) -> None:
        self.ended[key] = None
        while len(self.ended) > MAX_ENDED:
            self.ended.popitem(last=False)

    # -- barge-in ------------------------------------------------------------------------

    async def _on_voice_started(self, v: VoiceStarted) -> None:
        if self.speaker.conversation_wav:
            self._tape(v.conversation_id).user_started(v.utterance_id, v.preroll_ms)
        if not self.speaker.barge_in:
            return
        for pb in list(self.order.get(v.conversation_id, ())):
            if not pb.started or pb.finished or pb.utterance_id == v.utterance_id:
                continue
            if pb.output is not None:
                pb.output.halt()  # what was heard up to the moment we learned of the user
            stop = Interrupt(
                event_id=derive_id(v.event_id, "interrupt", pb.utterance_id),
                conversation_id=pb.conversation_id,
                utterance_id=pb.utterance_id,
                producer=self.worker_id,
                reason="barge-in",
                by_utterance_id=v.utterance_id,
            )
            await self.bus.publish(stop)
            await self._finish(pb, derive_id(stop.event_id, "playback-done"), interrupted=True)
            log.info("barge-in", extra={"utterance": pb.utterance_id, "by": v.utterance_id})

    def _tape(self, conversation_id: str) -> ConversationTape:
        tape = self.tapes.get(conversation_id)
        if tape is None:
            path = self.settings.data_dir / "replies" / conversation_id / "conversation.wav"
            tape = self.tapes[conversation_id] = ConversationTape(path, TAPE_RATE)
        return tape
