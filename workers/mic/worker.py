"""The mic worker: source -> VAD end-pointing -> voice-started / audio-chunk / voice-stopped.

It is an endpoint (ENDPOINT, "device" under `just up`): it binds its conversation to that
endpoint when it starts (`endpoint.conversation-started`, with how far turns go), then
publishes only inside utterances, through the endpoint runtime's `Capture` (shared with the
web and Wyoming endpoints). Each utterance gets a new utterance id and an OpenTelemetry root
span "utterance" that starts at the speech onset; every event of the utterance carries that
span's context, so all downstream spans join one trace.
"""

from __future__ import annotations

import logging

import numpy as np

from schemas import new_id
from workers.mic.config import MicSettings
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.endpoint.capture import Capture
from workers.runtime.endpoint.duplex import PlaybackWatch
from workers.runtime.endpoint.endpointer import EndpointConfig, Endpointer
from workers.runtime.endpoint.sources import AudioSource, FileSource, MicSource
from workers.runtime.endpoint.turn import make_turn_model
from workers.runtime.endpoint.vad import make_vad
from workers.runtime.service import Worker

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


def endpoint_config(cfg: MicSettings) -> EndpointConfig:
    return EndpointConfig(
        chunk_ms=cfg.chunk_ms,
        preroll_ms=cfg.preroll_ms,
        min_speech_ms=cfg.min_speech_ms,
        hangover_ms=cfg.hangover_ms,
        max_utterance_ms=cfg.max_utterance_ms,
        threshold=cfg.threshold,
        turn=cfg.turn,
        min_silence_ms=cfg.turn_min_silence_ms,
        max_silence_ms=cfg.turn_max_silence_ms,
        turn_threshold=cfg.turn_threshold,
        transcript_wait_ms=cfg.turn_transcript_wait_ms,
    )


def make_endpointer(cfg: MicSettings) -> Endpointer:
    return Endpointer(
        make_vad(cfg.vad, cfg.webrtc_mode), endpoint_config(cfg), make_turn_model(cfg.turn)
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
        self.endpoint = settings.endpoint
        self.capture: Capture | None = None
        self.watch: PlaybackWatch | None = None
        """MIC_DUPLEX=half: the replies playing at this endpoint."""
        self.ignored_ms = 0.0
        """Audio not listened to because a reply was playing (half duplex)."""

    @property
    def utterances(self) -> int:
        return self.capture.utterances if self.capture else 0

    async def setup(self) -> None:
        # Errors here (missing file, device, model) reach the user as one line.
        self.source = self.source or make_source(self.mic)
        self.endpointer = self.endpointer or make_endpointer(self.mic)
        self.capture = Capture(
            self.bus,
            self.endpointer,
            self.endpoint,
            self.conversation_id,
            self.worker_id,
            self.source.name,
        )
        log.info(
            "mic ready",
            extra={"source": self.source.name, "conversation": self.conversation_id},
        )

    async def background(self) -> None:
        assert self.source is not None and self.capture is not None
        medium = "file" if self.mic.file else "device"
        await self.capture.bind(medium, self.mic.last_stage, replay_of=self.mic.replay_of)
        if self.mic.duplex == "half":
            self.watch = await PlaybackWatch(
                self.bus, self.endpoint, self.conversation_id, self.mic.duplex_tail_ms / 1000
            ).start()
        blocks = self.source.blocks()
        try:
            async for block in blocks:
                # A device source dates its blocks by the ADC clock; a file by now.
                captured_at = getattr(self.source, "captured_at", None)
                if self.watch is not None and self.watch.audible(captured_at):
                    # Half duplex: the reply is not listened to. Silence, not a gap, so the
                    # end-pointer's clock runs on and an utterance open at the reply's
                    # start ends by its hangover.
                    self.ignored_ms += 1000 * len(block) / 16_000
                    block = np.zeros(len(block), dtype=np.int16)
                await self.capture.feed(block, captured_at)
                if self.stopping.is_set():
                    break
        finally:
            await self.capture.close()
            await blocks.aclose()
            if self.watch is not None:
                await self.watch.stop()
        # A file has ended: the worker is done (a live mic only ends on SIGTERM).
        self.stop()
