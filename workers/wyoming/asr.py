"""asr: a Wyoming `transcribe` request as one utterance of a conversation of the endpoint.

The client's audio (any rate, mono or stereo, 16-bit) becomes 20 ms chunks of 16 kHz mono
on the bus between a voice-started and a voice-stopped; the client's `audio-stop` is the end
of speech (Home Assistant and satellites end-point the audio themselves), so nothing waits
for the end-pointer. The stt worker's partials come back as `transcript-chunk`s (only the
words it no longer revises), its final transcript as `transcript`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np
from opentelemetry import trace
from wyoming.asr import Transcript as WyTranscript
from wyoming.asr import TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart
from wyoming.event import Event as WyEvent

from schemas import (
    PIPELINE_RATE,
    ControlError,
    MicAudioChunk,
    Transcript,
    TranscriptPartial,
    VoiceStarted,
    VoiceStopped,
    new_id,
)
from workers.runtime.telemetry import tracer
from workers.wyoming.bridge import PRODUCER, Bridge
from workers.wyoming.config import WyomingSettings
from workers.wyoming.errors import RequestError

Send = Callable[[WyEvent], Awaitable[None]]

CHUNK_SAMPLES = PIPELINE_RATE // 50  # 20 ms, as the mic worker publishes
MAX_RATE = 192_000


class AudioConverter:
    """Client PCM (16-bit, announced rate and channels) -> 16 kHz mono int16, streaming."""

    def __init__(self, rate: int, width: int, channels: int) -> None:
        if width != 2:
            raise RequestError("audio-format", f"audio width {width} bytes: only 16-bit PCM (2)")
        if not 1 <= channels <= 8:
            raise RequestError("audio-format", f"audio with {channels} channels")
        if not 1000 <= rate <= MAX_RATE:
            raise RequestError("audio-format", f"audio rate {rate} Hz is out of range")
        self.rate, self.width, self.channels = rate, width, channels
        self._resampler = None
        if rate != PIPELINE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(rate, PIPELINE_RATE, 1, dtype="float32")

    def check(self, chunk: AudioChunk) -> None:
        """A chunk in the format announced by audio-start, whole frames only."""
        got = (chunk.rate, chunk.width, chunk.channels)
        if got != (self.rate, self.width, self.channels):
            raise RequestError(
                "audio-format",
                f"audio-chunk is {got[0]} Hz, {got[1]} bytes, {got[2]} channels; audio-start "
                f"announced {self.rate} Hz, {self.width} bytes, {self.channels} channels",
            )
        if len(chunk.audio) % (self.width * self.channels):
            raise RequestError(
                "audio-format", f"audio-chunk of {len(chunk.audio)} bytes is not whole frames"
            )

    def convert(self, pcm: bytes, last: bool = False) -> np.ndarray:
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        if self.channels > 1:
            x = x.reshape(-1, self.channels).mean(axis=1)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x, last=last)
        return (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")


class Transcription:
    """One transcribe request: audio in, transcript out."""

    def __init__(
        self,
        bridge: Bridge,
        settings: WyomingSettings,
        send: Send,
        session: str,
        start: AudioStart,
        language: str | None = None,
    ) -> None:
        self.bridge = bridge
        self.settings = settings
        self.send = send
        self.session = session
        self.language = language
        self.converter = AudioConverter(start.rate, start.width, start.channels)
        self.conversation_id = new_id()
        self.utterance_id = new_id()
        self.seq = 0
        self.samples = 0
        self._pending = np.zeros(0, dtype="<i2")
        self.stopped = False
        self.result: asyncio.Task[None] | None = None
        self.queue = bridge.listen(self.conversation_id)
        self._span = tracer("voicebus.wyoming").start_span(
            "utterance",
            attributes={
                "conversation_id": self.conversation_id,
                "utterance_id": self.utterance_id,
                "endpoint": bridge.endpoint,
                "source": "wyoming",
            },
        )
        self._ctx = trace.set_span_in_context(self._span)

    def _base(self) -> dict[str, str]:
        return {
            "endpoint": self.bridge.endpoint,
            "conversation_id": self.conversation_id,
            "utterance_id": self.utterance_id,
            "producer": PRODUCER,
        }

    async def begin(self) -> None:
        """Bind the conversation (transcribe only), open the utterance, relay its results."""
        self.result = asyncio.create_task(self._relay(self.queue))
        await self.bridge.bind(self.conversation_id, "stt", self.session)
        await self.bridge.bus.publish(VoiceStarted(**self._base(), source="wyoming"), ctx=self._ctx)

    async def audio(self, chunk: AudioChunk) -> None:
        self.converter.check(chunk)
        pcm = self.converter.convert(chunk.audio)
        await self._publish(pcm)
        if self.samples / PIPELINE_RATE > self.settings.max_audio_s:
            raise RequestError(
                "audio-too-long",
                f"more than {self.settings.max_audio_s:g} s of audio (WYOMING_MAX_AUDIO_S)",
            )

    async def _publish(self, pcm: np.ndarray, flush: bool = False) -> None:
        pending = np.concatenate([self._pending, pcm]) if len(self._pending) else pcm
        n = len(pending) if flush else len(pending) - len(pending) % CHUNK_SAMPLES
        for i in range(0, n, CHUNK_SAMPLES):
            block = pending[i : min(i + CHUNK_SAMPLES, n)]
            await self.bridge.bus.publish_nowait(
                MicAudioChunk(
                    **self._base(),
                    seq=self.seq,
                    audio=block.tobytes(),
                    offset_ms=1000.0 * self.samples / PIPELINE_RATE,
                ),
                ctx=self._ctx,
            )
            self.seq += 1
            self.samples += len(block)
        self._pending = pending[n:]

    async def stop(self, reason: str = "end-of-stream") -> None:
        """The client's audio-stop (the end of speech), or `cancelled` when it went away."""
        if self.stopped:
            return
        self.stopped = True
        if reason != "cancelled":
            await self._publish(self.converter.convert(b"", last=True), flush=True)
        await self.bridge.bus.flush_publishes()
        duration_ms = 1000.0 * self.samples / PIPELINE_RATE
        await self.bridge.bus.publish(
            VoiceStopped(
                **self._base(),
                reason=reason,  # type: ignore[arg-type]
                chunks=self.seq,
                duration_ms=duration_ms,
                speech_end_offset_ms=duration_ms,
                speech_end_ts=time.time(),
            ),
            ctx=self._ctx,
        )
        self._span.set_attribute("audio_ms", duration_ms)
        self._span.set_attribute("end_reason", reason)
        self._span.end()

    async def _relay(self, queue: asyncio.Queue) -> None:  # type: ignore[type-arg]
        """Partials as transcript-chunks (stable words only), then the final transcript."""
        sent = ""
        started = False
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(queue.get(), self._remaining())
                except TimeoutError:
                    raise RequestError(
                        "timeout",
                        f"no transcript within {self.settings.timeout_s:g} s (is the stt "
                        "worker running?)",
                    ) from None
                if ev.utterance_id != self.utterance_id:
                    continue
                if isinstance(ev, TranscriptPartial):
                    stable = ev.text[: ev.stable_chars]
                    if stable.startswith(sent) and len(stable.strip()) > len(sent.strip()):
                        if not started:
                            await self.send(TranscriptStart(language=self.language).event())
                            started = True
                        await self.send(TranscriptChunk(text=stable[len(sent) :]).event())
                        sent = stable
                elif isinstance(ev, Transcript) and not ev.speculative:
                    await self._final(ev, sent, started)
                    return
                elif isinstance(ev, ControlError):
                    raise RequestError(f"{ev.failed_stage}-{ev.code}", ev.message)
        finally:
            self.bridge.unlisten(self.conversation_id, queue)

    async def _final(self, ev: Transcript, sent: str, started: bool) -> None:
        text = ev.text.strip()
        language = ev.language or self.language
        if not started:
            await self.send(TranscriptStart(language=language).event())
        if text.startswith(sent) and len(text) > len(sent):
            await self.send(TranscriptChunk(text=text[len(sent) :]).event())
        await self.send(WyTranscript(text=text, language=language).event())
        await self.send(TranscriptStop().event())

    def _remaining(self) -> float:
        # The clock starts at audio-stop: the client may stream for as long as it speaks.
        return self.settings.timeout_s if self.stopped else self.settings.max_audio_s + 5.0

    async def cancel(self) -> None:
        """The request ends without a result (bad input, the client went away): the
        utterance is closed as cancelled, so the stt lets it go at once."""
        if self.result is not None and not self.result.done():
            self.result.cancel()
        self.bridge.unlisten(self.conversation_id, self.queue)
        if not self.stopped:
            await self.stop("cancelled")
