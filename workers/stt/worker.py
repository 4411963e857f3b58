"""The stt worker: follows utterances on the bus, emits partial and final transcripts.

Scale-out and recovery come from JetStream:
- Every instance binds to the shared durable consumer "stt" (`schemas.routing.STT`) on the
  voice-started events of the endpoints it serves (STT_MAX_CONCURRENT pull loops per
  instance, one message each); JetStream hands each voice-started to exactly one of them,
  and that instance owns the utterance.
- The owner replays the conversation's mic events from the voice-started's stream sequence
  with an ordered consumer, so it gets every chunk of the utterance, in order, even those
  published before it started. It keeps the voice-started alive with `in_progress()` and
  acks it only after the final transcript (or an error event) is stored.
- If the owner dies, the voice-started is redelivered after STT_ACK_WAIT_S to another
  instance (or the restarted one), which replays the same chunks. Event ids derive from the
  voice-started id, so what the dead owner already published is de-duplicated.
- Missing chunks or a voice-stopped that never comes end in `control.error`
  ("audio-gap", "utterance-timeout"), never in silence.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry import trace

from schemas import (
    ControlError,
    Event,
    MicAudioChunk,
    Transcript,
    TranscriptPartial,
    VoiceStarted,
    VoiceStopped,
    Word,
    derive_id,
)
from schemas.routing import STT
from workers.runtime.bus import Bus, Consumer, Delivery, Released
from workers.runtime.config import Settings
from workers.runtime.service import Worker
from workers.runtime.telemetry import tracer
from workers.stt.backends import Backend, DecodeCancelled, Decoded, WhisperBackend
from workers.stt.config import SttSettings
from workers.stt.streaming import RATE, Coverage, UtteranceAudio, stable_prefix

log = logging.getLogger("voicebus.stt")

MAX_DELIVER = 5


class UtteranceFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class DecodeGate:
    """One decode at a time per process (the model uses all cores). Urgent decodes (finals,
    and the quiet decode the end-pointer and the answer wait for) go first: a partial that
    would run while one waits is skipped, and a partial already running is given up at its
    next stage (`DecodeCancelled`), so the speech's end does not wait for words about its
    middle."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="stt-decode")
        self.urgent_waiting = 0
        self._running: tuple[bool, threading.Event] | None = None
        """(urgent, cancel) of the decode on the decoder now."""
        self.cancelled = 0

    async def run(
        self, fn: Callable[[threading.Event], Decoded], *, urgent: bool
    ) -> Decoded | None:
        """fn(cancel) on the decoder thread; None if it was skipped or given up."""
        loop = asyncio.get_running_loop()
        if urgent:
            self.urgent_waiting += 1
            if self._running is not None and not self._running[0]:
                self._running[1].set()
        try:
            async with self._lock:
                if not urgent and self.urgent_waiting:
                    return None  # a partial is worth less than someone's final
                cancel = threading.Event()
                self._running = (urgent, cancel)
                try:
                    return await loop.run_in_executor(self._pool, fn, cancel)
                except DecodeCancelled:
                    self.cancelled += 1
                    return None
                finally:
                    self._running = None
        finally:
            if urgent:
                self.urgent_waiting -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class SttWorker(Worker):
    name = "stt"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        stt: SttSettings | None = None,
        backend: Backend | None = None,
    ) -> None:
        super().__init__(bus, settings)
        self.stt = stt or SttSettings()
        self.backend: Backend = backend or WhisperBackend(self.stt)
        self.gate = DecodeGate()
        self._decoding: dict[str, tuple[asyncio.Task[None], bool]] = {}
        """The latest decode of each utterance followed, and whether it is a quiet one (a
        quiet decode may start while a partial runs: the gate gives the partial up)."""
        self._tracer = tracer("voicebus.stt")
        self.finals = 0

    async def setup(self) -> None:
        await asyncio.to_thread(self.backend.load)

    def consumers(self) -> list[Consumer]:
        return [
            self.route_consumer(
                STT,
                self.on_voice_started,
                batch=1,  # one utterance per pull loop: the others stay for other instances
                ack_wait=self.stt.ack_wait_s,
                max_deliver=MAX_DELIVER,
                max_ack_pending=10_000,
            )
            for _ in range(max(1, self.stt.max_concurrent))
        ]

    async def aclose(self) -> None:
        self.gate.close()

    # -- one utterance ----------------------------------------------------------------

    async def on_voice_started(self, event: Event, d: Delivery) -> None:
        assert isinstance(event, VoiceStarted)
        async with d.working(max(0.2, self.stt.ack_wait_s / 3)):
            try:
                await self._follow(event, d)
            except UtteranceFailed as exc:
                await self._error(event, exc.code, str(exc))
            except Released:
                raise
            except Exception as exc:
                if d.num_delivered < MAX_DELIVER and not isinstance(exc, AssertionError):
                    raise  # nak: retried, possibly by another instance
                await self._error(event, "stt-failed", f"{exc.__class__.__name__}: {exc}")

    async def _follow(self, started: VoiceStarted, d: Delivery) -> None:
        """Read the utterance's mic events in order until its voice-stopped, decoding
        partials on the way, then publish the final."""
        filters = STT.follow_filters(started.endpoint, started.conversation_id)
        utt = UtteranceAudio(self.stt.partial_interval_ms)
        state: dict[str, Any] = {"language": self.stt.language or None, "partials": 0}
        loop = asyncio.get_running_loop()
        last_event = loop.time()
        try:
            async with self.bus.follow(filters, d.stream_seq + 1) as follower:
                while True:
                    if self.stopping.is_set():
                        # Nak'd: JetStream hands the utterance to another instance now.
                        raise Released("stt shutting down; utterance handed back")
                    got = await follower.next(timeout=0.5)
                    if got is None:
                        if loop.time() - last_event >= self.stt.utterance_timeout_s:
                            raise UtteranceFailed(
                                "utterance-timeout",
                                f"no audio or voice-stopped for "
                                f"{self.stt.utterance_timeout_s:.0f} s after chunk "
                                f"{utt.next_chunk_seq - 1}",
                            )
                        continue
                    last_event = loop.time()
                    ev = got.event
                    if ev is None or ev.utterance_id != started.utterance_id:
                        continue
                    if isinstance(ev, MicAudioChunk):
                        # Pre-roll comes from the past in one burst (for a resumed turn: the
                        # cut utterance and the pause): no decode on a pause inside it.
                        live = ev.offset_ms >= started.preroll_ms
                        caught_up = live and follower.pending == 0
                        self._on_chunk(started, ev, utt, state, caught_up=caught_up)
                    elif isinstance(ev, VoiceStopped):
                        await self._on_stopped(started, ev, utt, state)
                        return
        finally:
            latest = self._decoding.pop(started.utterance_id, None)
            if latest is not None and not latest[0].done():
                latest[0].cancel()

    def _on_chunk(
        self,
        started: VoiceStarted,
        chunk: MicAudioChunk,
        utt: UtteranceAudio,
        state: dict[str, Any],
        caught_up: bool,
    ) -> None:
        if chunk.seq < utt.next_chunk_seq:
            return  # a re-published chunk
        if chunk.seq > utt.next_chunk_seq:
            raise UtteranceFailed(
                "audio-gap", f"chunk {chunk.seq} arrived, {utt.next_chunk_seq} missing"
            )
        utt.add(chunk.audio)
        # Decode only when caught up: replayed backlog is not worth a partial.
        kind = utt.want_decode() if caught_up else None
        latest = self._decoding.get(started.utterance_id)
        busy = latest is not None and not latest[0].done()
        # A quiet decode does not wait for a partial of this utterance to finish: the speech
        # has just ended, and the end-pointer and the answer wait for this decode.
        if kind and (not busy or (kind == "quiet" and latest is not None and not latest[1])):
            quiet = kind == "quiet"
            task = asyncio.create_task(self._partial(started, utt, state, quiet=quiet))
            self._decoding[started.utterance_id] = (task, quiet)

    async def _on_stopped(
        self, started: VoiceStarted, stopped: VoiceStopped, utt: UtteranceAudio, state: dict
    ) -> None:
        if stopped.chunks != utt.next_chunk_seq:
            raise UtteranceFailed(
                "audio-gap",
                f"voice-stopped says {stopped.chunks} chunks, got {utt.next_chunk_seq}",
            )
        latest = self._decoding.get(started.utterance_id)
        if (
            latest is not None
            and utt.reusable(stopped.speech_end_offset_ms) is None
            and state.get("inflight_final_quality")
            and utt.covers(utt.decoded_to, stopped.speech_end_offset_ms)
        ):
            await latest[0]  # it saw all the speech: cheaper than a new decode
        state["final"] = True
        await self._final(started, stopped, utt, state)

    async def _partial(
        self, started: VoiceStarted, utt: UtteranceAudio, state: dict[str, Any], quiet: bool
    ) -> None:
        samples = utt.decode_started(quiet)
        audio = utt.audio(samples)
        # Beam 1 finals cost only the word alignment more than a partial: decode partials
        # at final quality so a partial that saw the whole speech can become the final.
        final_quality = self.stt.beam_size <= 1 or quiet
        state["inflight_final_quality"] = final_quality
        with self._tracer.start_as_current_span("stt.partial") as span:
            out = await self.gate.run(
                lambda cancel: self.backend.transcribe(
                    audio,
                    final=final_quality,
                    language=state["language"],
                    onset_s=started.preroll_ms / 1000,
                    cancel=cancel,
                ),
                urgent=quiet,
            )
            if out is None:
                span.set_attribute("skipped", True)
                return
            span.set_attribute("audio_ms", out.audio_ms)
            span.set_attribute("decode_ms", out.decode_ms)
        if utt.best is None or samples >= utt.best.samples:
            utt.best = Coverage(out, samples, final_quality)
        if out.language and not state["language"]:
            state["language"] = out.language
        if quiet and final_quality and self.stt.speculate:
            await self._speculate(started, out, utt, state, samples)
        if state.get("final") or not out.text or out.text == utt.last_partial_text:
            return
        seq = state["partials"]
        state["partials"] += 1
        partial = TranscriptPartial(
            event_id=derive_id(started.event_id, "partial", seq),
            endpoint=started.endpoint,
            conversation_id=started.conversation_id,
            utterance_id=started.utterance_id,
            seq=seq,
            producer=self.worker_id,
            text=out.text,
            audio_ms=out.audio_ms,
            stable_chars=stable_prefix(utt.last_partial_text, out.text),
        )
        utt.last_partial_text = out.text
        await self.bus.publish(partial)

    async def _speculate(
        self,
        started: VoiceStarted,
        out: Decoded,
        utt: UtteranceAudio,
        state: dict[str, Any],
        samples: int,
    ) -> None:
        """The speech has paused and this decode saw all of it: publish it as a speculative
        transcript, so the llm (and the tts) can start answering while the end-pointer still
        waits. Nothing of that answer is heard unless the final transcript agrees."""
        if state.get("final") or not out.text.strip():
            return
        if out.text == state.get("speculated") and samples <= state.get("speculated_samples", 0):
            return
        # The same words again but having heard more (the confirming decode) still go out:
        # the end-pointer takes a transcript only once it covers all the speech; the llm
        # sees the same question and lets its answer stand.
        state["speculated_samples"] = samples
        k = state.get("speculations", 0)
        state["speculations"] = k + 1
        state["speculated"] = out.text
        # Its own span, so the llm's answer to it hangs under the decode that heard it.
        with self._tracer.start_as_current_span("stt.speculative") as span:
            span.set_attribute("audio_ms", 1000.0 * samples / RATE)
            span.set_attribute("decode_ms", out.decode_ms)
            await self.bus.publish(
                self._transcript(
                    started, out, derive_id(started.event_id, "speculative", k), samples, True
                )
            )

    def _transcript(
        self,
        started: VoiceStarted,
        out: Decoded,
        event_id: str,
        samples: int,
        speculative: bool,
        decode_ms: float | None = None,
    ) -> Transcript:
        return Transcript(
            event_id=event_id,
            endpoint=started.endpoint,
            conversation_id=started.conversation_id,
            utterance_id=started.utterance_id,
            seq=0,
            producer=self.worker_id,
            text=out.text,
            language=out.language,
            language_probability=min(1.0, max(0.0, out.language_probability)),
            confidence=min(1.0, max(0.0, out.confidence)),
            words=tuple(
                Word(word=w.word, start_s=w.start_s, end_s=w.end_s, probability=w.probability)
                for w in out.words
            ),
            audio_ms=1000.0 * samples / RATE,
            decode_ms=out.decode_ms if decode_ms is None else decode_ms,
            model=self.backend.name,
            speculative=speculative,
        )

    async def _final(
        self,
        started: VoiceStarted,
        stopped: VoiceStopped,
        utt: UtteranceAudio,
        state: dict[str, Any],
    ) -> None:
        received = time.time()
        with self._tracer.start_as_current_span("stt.final") as span:
            out = utt.reusable(stopped.speech_end_offset_ms)
            reused = out is not None
            if out is None:
                audio = utt.audio()
                out = await self.gate.run(
                    lambda _cancel: self.backend.transcribe(
                        audio,
                        final=True,
                        language=state["language"],
                        onset_s=started.preroll_ms / 1000,
                    ),
                    urgent=True,
                )
                assert out is not None
            transcript = self._transcript(
                started,
                out,
                derive_id(started.event_id, "transcript"),
                utt.samples,
                False,
                decode_ms=0.0 if reused else out.decode_ms,
            )
            await self.bus.publish(transcript)
            latency_ms = 1000.0 * (time.time() - stopped.ts)
            span.set_attribute("audio_ms", transcript.audio_ms)
            span.set_attribute("decode_ms", transcript.decode_ms)
            span.set_attribute("final_latency_ms", latency_ms)
            span.set_attribute("stt_wait_ms", 1000.0 * (time.time() - received))
            span.set_attribute("reused_partial", reused)
        self.finals += 1
        log.info(
            "final",
            extra={
                "utterance": started.utterance_id,
                "final_latency_ms": round(latency_ms, 1),
                "reused_partial": reused,
            },
        )
        log.debug("final text", extra={"text": out.text})

    async def _error(self, started: VoiceStarted, code: str, message: str) -> None:
        trace.get_current_span().set_status(trace.StatusCode.ERROR, message)
        log.warning("utterance failed", extra={"code": code, "reason": message})
        await self.bus.publish(
            ControlError.of(started, "stt", code, message, producer=self.worker_id)
        )
