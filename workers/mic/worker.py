"""The mic worker: source -> VAD end-pointing -> voice-started / audio-chunk / voice-stopped.

It is an endpoint (ENDPOINT, "device" under `just up`): it binds its conversation to that
endpoint when it starts (`endpoint.conversation-started`, with how far turns go), then
publishes only inside utterances. Each utterance gets a new utterance id and an
OpenTelemetry root span "utterance" that starts at the speech onset; every event of the
utterance carries that span's context, so all downstream spans join one trace. VAD never
pauses, also while the assistant speaks: barge-in is a voice-started during playback.
"""

from __future__ import annotations

import asyncio
import logging
import time

from opentelemetry import trace

from schemas import MicAudioChunk, VoiceStarted, VoiceStopped, binding, new_id
from workers.mic.config import MicSettings
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.endpoint.endpointer import Chunk, EndpointConfig, Endpointer, Started, Stopped
from workers.runtime.endpoint.sources import RATE, AudioSource, FileSource, MicSource
from workers.runtime.endpoint.vad import make_vad
from workers.runtime.service import Worker
from workers.runtime.telemetry import tracer

log = logging.getLogger("voicebus.mic")


def make_source(cfg: MicSettings) -> AudioSource:
    if cfg.file:
        return FileSource(
            cfg.file,
            realtime=cfg.realtime,
            block_ms=cfg.chunk_ms,
            tail_silence_ms=cfg.tail_silence_ms,
        )
    return MicSource(cfg.device or None, block_ms=cfg.chunk_ms)


def make_endpointer(cfg: MicSettings) -> Endpointer:
    return Endpointer(
        make_vad(cfg.vad, cfg.webrtc_mode),
        EndpointConfig(
            chunk_ms=cfg.chunk_ms,
            preroll_ms=cfg.preroll_ms,
            min_speech_ms=cfg.min_speech_ms,
            hangover_ms=cfg.hangover_ms,
            max_utterance_ms=cfg.max_utterance_ms,
            threshold=cfg.threshold,
        ),
    )


class MicWorker(Worker):
    name = "mic"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        mic: MicSettings | None = None,
        source: AudioSource | None = None,
        endpointer: Endpointer | None = None,
    ) -> None:
        super().__init__(bus, settings)
        self.mic = mic or MicSettings()
        self.conversation_id = self.mic.conversation or new_id()
        self.source = source
        self.endpointer = endpointer
        self.utterances = 0
        self._tracer = tracer("voicebus.mic")
        self._span: trace.Span | None = None
        self._ctx = None
        self._utterance_id = ""
        self.endpoint = settings.endpoint
        self._fed_samples = 0
        """Samples handed to the end-pointer so far (the source's clock)."""
        self._fed_at = 0.0
        """Wall-clock time the last block was captured (received from the source)."""
        self._utterance_start_ms = 0.0

    async def setup(self) -> None:
        # Errors here (missing file, device, model) reach the user as one line.
        self.source = self.source or make_source(self.mic)
        self.endpointer = self.endpointer or make_endpointer(self.mic)
        log.info(
            "mic ready",
            extra={"source": self.source.name, "conversation": self.conversation_id},
        )

    async def background(self) -> None:
        assert self.source is not None and self.endpointer is not None
        await self.bus.publish(
            binding(
                self.endpoint,
                self.conversation_id,
                "file" if self.mic.file else "device",
                last_stage=self.mic.last_stage,
                producer=self.worker_id,
                replay_of=self.mic.replay_of,
            )
        )
        blocks = self.source.blocks()
        try:
            async for block in blocks:
                self._fed_at = time.time()
                self._fed_samples += len(block)
                for seg in self.endpointer.feed(block):
                    await self._publish(seg)
                if self.stopping.is_set():
                    break
        finally:
            for seg in self.endpointer.flush():
                await self._publish(seg)
            await blocks.aclose()
        # A file has ended: the worker is done (a live mic only ends on SIGTERM).
        self.stop()

    async def _publish(self, seg: Started | Chunk | Stopped) -> None:
        assert self.source is not None
        base = {
            "endpoint": self.endpoint,
            "conversation_id": self.conversation_id,
            "producer": self.worker_id,
        }
        if isinstance(seg, Started):
            self._utterance_start_ms = seg.stream_offset_ms - seg.preroll_ms
            self._utterance_id = new_id()
            self._span = self._tracer.start_span(
                "utterance",
                context=None,
                attributes={
                    "conversation_id": self.conversation_id,
                    "utterance_id": self._utterance_id,
                    "source": self.source.name,
                    "stream_offset_ms": seg.stream_offset_ms,
                },
            )
            self._ctx = trace.set_span_in_context(self._span)
            ev = VoiceStarted(
                **base,
                utterance_id=self._utterance_id,
                seq=0,
                source=self.source.name,
                stream_offset_ms=seg.stream_offset_ms,
                preroll_ms=seg.preroll_ms,
            )
            await self.bus.publish(ev, ctx=self._ctx)
        elif isinstance(seg, Chunk):
            chunk = MicAudioChunk(
                **base,
                utterance_id=self._utterance_id,
                seq=seg.seq,
                audio=seg.pcm,
                offset_ms=seg.offset_ms,
            )
            # Pipelined: chunks keep their order on one connection; acks are awaited at stop.
            await self.bus.publish_nowait(chunk, ctx=self._ctx)
        else:
            await self.bus.flush_publishes()
            ev = VoiceStopped(
                **base,
                utterance_id=self._utterance_id,
                seq=0,
                reason=seg.reason,
                chunks=seg.chunks,
                duration_ms=seg.duration_ms,
                speech_end_offset_ms=seg.speech_end_offset_ms,
                speech_end_ts=self._speech_end_ts(seg.speech_end_offset_ms),
            )
            await self.bus.publish(ev, ctx=self._ctx)
            self.utterances += 1
            if self._span is not None:
                self._span.set_attribute("audio_ms", seg.duration_ms)
                self._span.set_attribute("end_reason", seg.reason)
                self._span.end()
            self._span = None
            log.debug("utterance", extra={"chunks": seg.chunks, "reason": seg.reason})

    def _speech_end_ts(self, speech_end_offset_ms: float) -> float:
        """Wall-clock capture time of the end of speech: the last block fed was captured at
        `_fed_at`, and speech ended that much source audio before its last sample."""
        fed_ms = 1000.0 * self._fed_samples / RATE
        since_ms = fed_ms - (self._utterance_start_ms + speech_end_offset_ms)
        return self._fed_at - max(0.0, since_ms) / 1000.0

    async def aclose(self) -> None:
        await asyncio.sleep(0)
