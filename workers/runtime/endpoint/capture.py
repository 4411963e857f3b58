"""Audio in: one conversation's microphone blocks -> end-pointing -> mic events on the bus.

A `Capture` is the listening side of one endpoint's conversation (the mic worker, a browser
tab in the web gateway, a Wyoming client). Every endpoint uses this one piece, so an
utterance means the same thing wherever it is spoken: the same end-pointer, the same
events, the same trace (an "utterance" root span from the speech onset that every
downstream span joins), and the same clock for when speech really ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np
from opentelemetry import trace

from schemas import (
    MicAudioChunk,
    Transcript,
    TurnDecision,
    VoiceStarted,
    VoiceStopped,
    binding,
    derive_id,
    new_id,
    subject_filter,
)
from workers.runtime.bus import Bus
from workers.runtime.endpoint.endpointer import (
    Chunk,
    Decision,
    Endpointer,
    ScoreRequest,
    Segment,
    Started,
    Stopped,
)
from workers.runtime.endpoint.turn import timed_score
from workers.runtime.endpoint.vad import RATE
from workers.runtime.telemetry import tracer

log = logging.getLogger("voicebus.capture")


class Capture:
    """Publishes the utterances found in one conversation's audio. Feed it blocks of 16 kHz
    mono int16 as they are captured (`feed`), and `close()` it when the audio ends."""

    def __init__(
        self,
        bus: Bus,
        endpointer: Endpointer,
        endpoint: str,
        conversation_id: str,
        producer: str,
        source: str,
        on_onset: Callable[[VoiceStarted], Awaitable[None]] | None = None,
    ) -> None:
        self.bus = bus
        self.on_onset = on_onset
        """Called with each utterance's onset once it is on the bus: an endpoint that plays
        in the same process stops its reply there without waiting for the bus to bring it
        back (barge-in)."""
        self.endpointer = endpointer
        # The end-of-turn model runs on a thread: in the loop, each run (40-150 ms) held up
        # the audio behind it, and in the web gateway every tab's audio in and out.
        endpointer.defer_scoring = endpointer.turn_model is not None
        self._scoring: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        """Held while the end-pointer is called and its segments published: audio, the
        model's answers and transcripts all move it, and its segments keep their order."""
        self.endpoint = endpoint
        self.conversation_id = conversation_id
        self.producer = producer
        self.source = source[:256]
        self.utterances = 0
        self.utterance_id = ""
        """The utterance being published ("" between utterances)."""
        self.last_utterance_id = ""
        """The last utterance that ended (a resumed one continues it)."""
        self._tracer = tracer("voicebus.mic")
        self._span: trace.Span | None = None
        self._ctx = None
        self._fed_samples = 0
        """Samples handed to the end-pointer so far (the source's clock)."""
        self._fed_at = 0.0
        """Wall-clock time the last block was captured."""
        self._utterance_start_ms = 0.0
        self._started_event_id = ""
        self._decisions = 0
        self._hints: asyncio.Task[None] | None = None

    async def bind(
        self, medium: str, last_stage: str = "speaker", session: str = "", replay_of: str = ""
    ) -> None:
        """Bind the conversation to this endpoint (before its first event)."""
        cfg = self.endpointer.cfg
        if cfg.turn == "smart" and cfg.transcript_wait_ms > 0 and self._hints is None:
            ready = asyncio.Event()
            self._hints = asyncio.create_task(self._follow_transcripts(ready))
            await asyncio.wait_for(ready.wait(), 10)
        await self.bus.publish(
            binding(
                self.endpoint,
                self.conversation_id,
                medium,
                last_stage=last_stage,
                session=session,
                producer=self.producer,
                replay_of=replay_of,
            )
        )

    async def feed(self, block: np.ndarray | bytes, captured_at: float | None = None) -> None:
        """One block of audio, captured (its last sample) at `captured_at` (default: now)."""
        fed_at = time.time() if captured_at is None else captured_at
        n = len(block) // 2 if isinstance(block, bytes | bytearray) else len(block)
        if self._scoring is not None and self.endpointer.awaiting_score:
            # Audio comes faster than the model answers (a loaded machine, or a source
            # quicker than real time): the pause is decided before it goes on, as it would
            # be had the model run in line.
            await asyncio.shield(self._scoring)
        async with self._lock:
            # The clock and the count move together: a decision published meanwhile (the
            # model's answer, a transcript) dates the speech's end from both, and the new
            # block's time with the old count would date it a block late.
            self._fed_at = fed_at
            self._fed_samples += n
            for seg in self.endpointer.feed(block):
                await self._handle(seg)

    async def close(self) -> None:
        """The audio ended: an open utterance ends with reason end-of-stream."""
        async with self._lock:
            for seg in self.endpointer.flush():
                await self._handle(seg)
        await self.bus.flush_publishes()
        if self._scoring is not None:
            with contextlib.suppress(Exception):
                await self._scoring  # its answer is dropped: the utterance is closed
            self._scoring = None
        if self._hints is not None:
            self._hints.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._hints
            self._hints = None

    async def _follow_transcripts(self, ready: asyncio.Event) -> None:
        """Hand the stt's speculative transcripts of the open utterance to the end-pointer:
        their last word may show that a pause the model calls final is not."""
        subject = subject_filter(self.endpoint, self.conversation_id, Transcript.type)
        try:
            async with self.bus.follow([subject], 0) as follower:
                ready.set()
                while True:
                    got = await follower.next(timeout=1.0)
                    ev = got.event if got is not None else None
                    if not (isinstance(ev, Transcript) and ev.speculative):
                        continue
                    async with self._lock:
                        if ev.utterance_id == self.utterance_id:
                            for seg in self.endpointer.hint(ev.text, ev.audio_ms):
                                await self._handle(seg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the turn is then judged on the audio alone
            ready.set()
            log.warning("transcript hints unavailable", extra={"error": repr(exc)})

    @property
    def in_utterance(self) -> bool:
        return self.endpointer.in_utterance

    async def _handle(self, seg: Segment) -> None:
        if isinstance(seg, ScoreRequest):
            self._scoring = asyncio.create_task(self._score(seg))
        else:
            await self.publish(seg)

    async def _score(self, req: ScoreRequest) -> None:
        model = self.endpointer.turn_model
        assert model is not None
        try:
            score, took_ms = await asyncio.to_thread(timed_score, model, req.audio)
        except Exception as exc:  # the pause then ends at the max silence
            log.warning("end-of-turn model failed", extra={"error": repr(exc)})
            return
        async with self._lock:
            for seg in self.endpointer.scored(req.token, score, took_ms):
                await self._handle(seg)

    async def publish(self, seg: Segment) -> None:
        base = {
            "endpoint": self.endpoint,
            "conversation_id": self.conversation_id,
            "producer": self.producer,
        }
        if isinstance(seg, Started):
            await self._started(seg, base)
        elif isinstance(seg, Chunk):
            chunk = MicAudioChunk(
                **base,
                utterance_id=self.utterance_id,
                seq=seg.seq,
                audio=seg.pcm,
                offset_ms=seg.offset_ms,
            )
            # Pipelined: chunks keep their order on one connection; acks are awaited at stop.
            await self.bus.publish_nowait(chunk, ctx=self._ctx)
        elif isinstance(seg, Decision):
            await self._decided(seg, base)
        elif isinstance(seg, Stopped):
            await self._stopped(seg, base)

    async def _decided(self, seg: Decision, base: dict[str, str]) -> None:
        seq = self._decisions
        self._decisions += 1
        event = TurnDecision(
            **base,
            event_id=derive_id(self._started_event_id, "turn-decision", seq),
            utterance_id=self.utterance_id,
            seq=seq,
            policy=seg.policy,
            outcome=seg.outcome,
            reason=seg.reason,
            score=seg.score,
            threshold=seg.threshold,
            silence_ms=seg.silence_ms,
            audio_ms=seg.audio_ms,
            model_ms=seg.model_ms,
            transcript_tail=seg.transcript_tail,
        )
        await self.bus.publish_nowait(event, ctx=self._ctx)
        if self._span is not None:
            self._span.add_event(
                "turn-decision",
                {"outcome": seg.outcome, "reason": seg.reason, "score": seg.score or -1.0},
            )

    async def _started(self, seg: Started, base: dict[str, str]) -> None:
        self._utterance_start_ms = seg.stream_offset_ms - seg.preroll_ms
        self.utterance_id = new_id()
        self._span = self._tracer.start_span(
            "utterance",
            context=None,
            attributes={
                "conversation_id": self.conversation_id,
                "utterance_id": self.utterance_id,
                "endpoint": self.endpoint,
                "source": self.source,
                "stream_offset_ms": seg.stream_offset_ms,
                "resumes": self.last_utterance_id if seg.resumes else "",
            },
        )
        self._ctx = trace.set_span_in_context(self._span)
        started = VoiceStarted(
            **base,
            utterance_id=self.utterance_id,
            seq=0,
            source=self.source,
            stream_offset_ms=seg.stream_offset_ms,
            preroll_ms=seg.preroll_ms,
            resumes=self.last_utterance_id if seg.resumes else "",
        )
        self._started_event_id = started.event_id
        self._decisions = 0
        await self.bus.publish(started, ctx=self._ctx)
        if self.on_onset is not None:
            await self.on_onset(started)

    async def _stopped(self, seg: Stopped, base: dict[str, str]) -> None:
        await self.bus.flush_publishes()
        await self.bus.publish(
            VoiceStopped(
                **base,
                utterance_id=self.utterance_id,
                seq=0,
                reason=seg.reason,
                chunks=seg.chunks,
                duration_ms=seg.duration_ms,
                speech_end_offset_ms=seg.speech_end_offset_ms,
                speech_end_ts=self.speech_end_ts(seg.speech_end_offset_ms),
            ),
            ctx=self._ctx,
        )
        self.utterances += 1
        if self._span is not None:
            self._span.set_attribute("audio_ms", seg.duration_ms)
            self._span.set_attribute("end_reason", seg.reason)
            self._span.end()
        self._span = None
        self.last_utterance_id, self.utterance_id = self.utterance_id, ""
        log.debug("utterance", extra={"chunks": seg.chunks, "reason": seg.reason})

    def speech_end_ts(self, speech_end_offset_ms: float) -> float:
        """Wall-clock capture time of the end of speech: the last block fed was captured at
        `_fed_at`, and speech ended that much source audio before its last sample."""
        fed_ms = 1000.0 * self._fed_samples / RATE
        since_ms = fed_ms - (self._utterance_start_ms + speech_end_offset_ms)
        return self._fed_at - max(0.0, since_ms) / 1000.0
