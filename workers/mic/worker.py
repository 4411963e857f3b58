"""The mic worker: source -> VAD end-pointing -> voice-started / audio-chunk / voice-stopped.

It is an endpoint (ENDPOINT, "device" under `just up`): it binds its conversation to that
endpoint when it starts (`endpoint.conversation-started`, with how far turns go), then
publishes only inside utterances, through the endpoint runtime's `Capture` (shared with the
web and Wyoming endpoints). Each utterance gets a new utterance id and an OpenTelemetry root
span "utterance" that starts at the speech onset; every event of the utterance carries that
span's context, so all downstream spans join one trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import nats.errors
import numpy as np

from schemas import EchoCancelled, WakeDetected, derive_id, new_id
from workers.mic.config import MicSettings
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.endpoint.aec import EchoPath, ReplyEcho, make_canceller
from workers.runtime.endpoint.capture import Capture
from workers.runtime.endpoint.duplex import PlaybackWatch
from workers.runtime.endpoint.endpointer import EndpointConfig, Endpointer
from workers.runtime.endpoint.reference import ReferenceBuffer, subscribe_reference
from workers.runtime.endpoint.room import Room, make_room
from workers.runtime.endpoint.script import ScriptSource
from workers.runtime.endpoint.sources import AudioSource, AudioSourceError, FileSource, MicSource
from workers.runtime.endpoint.turn import make_turn_model
from workers.runtime.endpoint.vad import RATE, make_vad
from workers.runtime.endpoint.wake import WakeGate, WakeWord
from workers.runtime.service import Worker, lower_cpu_priority

log = logging.getLogger("voicebus.mic")


def wants_reference(cfg: MicSettings) -> bool:
    return cfg.aec != "off" or bool(cfg.room) or bool(cfg.wake_word)


def make_source(cfg: MicSettings, reference: ReferenceBuffer | None = None) -> AudioSource:
    if cfg.room and not cfg.realtime:
        raise AudioSourceError("MIC_ROOM needs real time: the room plays replies as heard")
    if cfg.script and not (cfg.room and cfg.file):
        raise AudioSourceError("MIC_SCRIPT needs MIC_ROOM and MIC_FILE (the first line)")
    if cfg.room and cfg.file and reference is not None:
        # In the room the mic stays open after the file: the reply is heard through it.
        return ScriptSource(
            [cfg.file, *cfg.script],
            reference,
            block_ms=cfg.chunk_ms,
            tail_silence_ms=cfg.tail_silence_ms,
        )
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
        score_ahead_ms=cfg.turn_score_ahead_ms,
        max_silence_ms=cfg.turn_max_silence_ms,
        turn_threshold=cfg.turn_threshold,
        transcript_wait_ms=cfg.turn_transcript_wait_ms,
        resume_ms=cfg.turn_resume_ms,
    )


def make_endpointer(cfg: MicSettings) -> Endpointer:
    return Endpointer(
        make_vad(cfg.vad, cfg.webrtc_mode), endpoint_config(cfg), make_turn_model(cfg.turn)
    )


def make_echo(cfg: MicSettings, reference: ReferenceBuffer) -> EchoPath:
    return EchoPath(
        make_canceller(cfg.aec, cfg.aec_tail_ms),
        reference,
        delay_ms=cfg.aec_delay_ms,
        tail_ms=cfg.aec_tail_ms,
        gate_on=cfg.aec_gate and cfg.aec != "off",
    )


class BlockClock:
    """When each block's last sample was captured: the source's sample count on a wall-clock
    anchor (scheduling jitter would otherwise shift the echo reference against the audio),
    re-anchored if the source stalls or drops audio."""

    def __init__(self) -> None:
        self._anchor: float | None = None
        self._samples = 0

    def stamp(self, n: int) -> float:
        now = time.time()
        self._samples += n
        t = None if self._anchor is None else self._anchor + self._samples / RATE
        if t is None or abs(now - t) > 0.1:
            self._anchor, self._samples, t = now - n / RATE, n, now
        return t


class MicWorker(Worker):
    name = "mic"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        mic: MicSettings | None = None,
        source: AudioSource | None = None,
        endpointer: Endpointer | None = None,
        reference: ReferenceBuffer | None = None,
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
        self.reference = reference
        self.echo: EchoPath | None = None
        self.room: Room | None = None
        self._reference_sub = None
        self.wake = (
            WakeGate(WakeWord(self.mic.wake_word), self.mic.follow_up_s)
            if (self.mic.wake_word)
            else None
        )

    @property
    def utterances(self) -> int:
        return self.capture.utterances if self.capture else 0

    async def setup(self) -> None:
        # Errors here (missing file, device, model) reach the user as one line.
        if wants_reference(self.mic) and self.reference is None:
            self.reference = ReferenceBuffer()
        self.source = self.source or make_source(self.mic, self.reference)
        if self.reference is not None:
            self.echo = make_echo(self.mic, self.reference)
            self.room = make_room(self.mic.room, self.reference) if self.mic.room else None
            self._reference_sub = await subscribe_reference(self.bus, self.endpoint, self.reference)
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
        if self.mic.file and self.mic.start_at:
            late = time.time() - self.mic.start_at
            if late > 0:
                log.warning("ready %.2f s after MIC_START_AT: streaming now", late)
            else:
                await asyncio.sleep(-late)
        blocks = self.source.blocks()
        clock = BlockClock()
        try:
            async for block in blocks:
                stamped = clock.stamp(len(block))
                # A device dates its blocks by the ADC clock and a real-time file by its own
                # schedule; the block clock is for a source that does not (a file at full speed).
                captured_at = getattr(self.source, "captured_at", None)
                at = captured_at if captured_at is not None else stamped
                if self.watch is not None and self.watch.audible(at):
                    # Half duplex: the reply is not listened to. Silence, not a gap, so the
                    # end-pointer's clock runs on and an utterance open at the reply's
                    # start ends by its hangover.
                    self.ignored_ms += 1000 * len(block) / 16_000
                    block = np.zeros(len(block), dtype=np.int16)
                await self.capture.feed(await self._hear(block, at), at)
                if self.wake is not None:
                    self.wake.utterance(self.capture.in_utterance)
                if self.stopping.is_set():
                    break
        finally:
            await self.capture.close()
            await blocks.aclose()
            if self.watch is not None:
                await self.watch.stop()
            if self.echo is not None:
                for r in self.echo.finished(time.time() + 3600):
                    await self._echo_report(r)
            if self._reference_sub is not None:
                # A stop drains the connection: its subscriptions end with it, and one left
                # to unsubscribe raises (a traceback in the log on every SIGTERM mid-file).
                with contextlib.suppress(nats.errors.Error):
                    await self._reference_sub.unsubscribe()
        # A file has ended: the worker is done (a live mic only ends on SIGTERM). That comes
        # about a second after its last utterance ended, while the reply to it is being
        # made: the shutdown (the bus, the models, the interpreter's teardown) yields to it.
        # At normal priority it cost that reply's first audio ~100 ms (`just demo`, 2 cores).
        lower_cpu_priority(19)
        self.stop()

    async def _hear(self, block: np.ndarray, at: float) -> np.ndarray:
        """The room (simulated), then echo cancellation: what the VAD and STT hear."""
        if self.room is not None:
            block = self.room.mix(block, at)
        if self.echo is None:
            return block
        block = self.echo.process(block, at)
        for r in self.echo.finished(at):
            await self._echo_report(r)
            if self.wake is not None:
                self.wake.follow_up(at + self.mic.follow_up_s)
        if self.wake is not None:
            block, found = self.wake.feed(block, at)
            if found is not None:
                await self.bus.publish(
                    WakeDetected(
                        endpoint=self.endpoint,
                        conversation_id=self.conversation_id,
                        utterance_id=new_id(),
                        producer=self.worker_id,
                        name=found.name,
                        score=min(1.0, found.score),
                        offset_ms=found.offset_ms,
                    )
                )
                log.info("wake word", extra={"name": found.name, "score": found.score})
        return block

    async def _echo_report(self, r: ReplyEcho) -> None:
        await self.bus.publish(
            EchoCancelled(
                event_id=derive_id(r.utterance_id, "echo-cancelled", self.worker_id),
                endpoint=self.endpoint,
                conversation_id=r.conversation_id,
                utterance_id=r.utterance_id,
                producer=self.worker_id,
                canceller=r.canceller,
                erle_db=r.erle_db,
                echo_ms=r.echo_ms,
                gated_ms=r.gated_ms,
            )
        )
        log.info(
            "echo cancelled",
            extra={"utterance": r.utterance_id, "erle_db": r.erle_db, "echo_ms": r.echo_ms},
        )
