"""The tts worker: reply sentences in, audio chunks out as soon as the first audio exists.

Two consumers: "tts" (llm.reply-sentence, llm.reply-done, in stream order) and
"tts-control" (control.interrupt), so an interrupt is never queued behind sentences.
Sentences of one reply are spoken in index order: an early arrival is nak'd and retried,
so nothing is acked before its audio is on the bus. After a restart the reply's position
is recovered from the stream (the last tts events of the conversation).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import nats.js.errors
import numpy as np

from schemas import (
    ControlError,
    Event,
    Interrupt,
    ReplyDone,
    ReplySentence,
    SentenceDone,
    TtsAudioChunk,
    TtsDone,
    decode,
    derive_id,
    subject_filter,
)
from workers.runtime.bus import Bus, Consumer, Delivery
from workers.runtime.config import Settings
from workers.runtime.service import Worker
from workers.runtime.telemetry import tracer
from workers.tts.backends import TtsBackend, make_backend, split_clauses
from workers.tts.config import TtsSettings, get_tts_settings
from workers.tts.stream import Rechunker

log = logging.getLogger("voicebus.tts")
_tracer = tracer("workers.tts")
MAX_REPLIES = 512
SYNTH_ATTEMPTS = 3
"""Deliveries of a sentence before its failure ends the reply with control.error."""


class NotYet(Exception):
    """This input must wait for an earlier one of the same reply; retried shortly."""


@dataclass
class Reply:
    """What the worker knows about one reply (one turn of one conversation)."""

    next_index: int = 0
    """Next sentence to speak; also the number spoken so far."""
    seq: int = 0
    """Next tts.audio-chunk seq."""
    audio_ms: float = 0.0
    cancelled: bool = False
    finished: bool = False
    """tts.done is on the bus."""
    known: bool = False
    """A sentence or the done marker of this reply has been seen."""
    sentence_start: dict[int, tuple[int, float]] = field(default_factory=dict)
    """Sentence index -> (seq, audio_ms) when it started: a retried sentence reuses them."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while a chunk or tts.done is published, so nothing follows tts.done."""


class TtsWorker(Worker):
    name = "tts"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        tts: TtsSettings | None = None,
        backend: TtsBackend | None = None,
    ) -> None:
        super().__init__(bus, settings)
        self.tts = tts or get_tts_settings()
        # An injected backend is loaded by whoever made it (tests share one voice).
        self._load = backend is None
        self.backend = backend or make_backend(self.tts, settings)
        self.chunk_samples = max(1, self.tts.output_rate * self.tts.chunk_ms // 1000)
        self.replies: collections.OrderedDict[tuple[str, str], Reply] = collections.OrderedDict()

    async def setup(self) -> None:
        if self._load:
            t0 = time.perf_counter()
            await asyncio.to_thread(self.backend.load)
            # The first synthesis pays one-off costs (espeak init, onnxruntime arena): here,
            # not in the first reply's time to first audio.
            await asyncio.to_thread(lambda: list(self.backend.synthesize("Ready.")))
            log.info(
                "voice loaded",
                extra={"backend": self.backend.name, "load_s": round(time.perf_counter() - t0, 3)},
            )

    def consumers(self) -> list[Consumer]:
        return [
            self.bus.consumer(
                "tts",
                [
                    subject_filter(event_type=ReplySentence.type),
                    subject_filter(event_type=ReplyDone.type),
                ],
                handler=self.handle,
                batch=4,
                ack_wait=self.tts.ack_wait_s,
                max_deliver=50,
                retry_delay=0.05,
            ),
            self.bus.consumer(
                "tts-control",
                [subject_filter(event_type=Interrupt.type)],
                handler=self.handle_control,
                batch=16,
            ),
        ]

    # -- reply state ---------------------------------------------------------------------

    async def reply(self, conversation_id: str, utterance_id: str) -> Reply:
        key = (conversation_id, utterance_id)
        r = self.replies.get(key)
        if r is None:
            r = await self._recover(conversation_id, utterance_id)
            self.replies[key] = r
            while len(self.replies) > MAX_REPLIES:
                self.replies.popitem(last=False)
        return r

    async def _last(self, conversation_id: str, event_type: str) -> Event | None:
        try:
            msg = await self.bus.js.get_last_msg(
                self.bus.stream, subject_filter(conversation_id, event_type)
            )
        except nats.js.errors.NotFoundError:
            return None
        return decode(msg.data) if msg.data else None

    async def _recover(self, conversation_id: str, utterance_id: str) -> Reply:
        """State of a reply this process has not seen, from the last tts events on the bus
        (a restart mid-reply continues where the previous process stopped)."""
        r = Reply()
        done, interrupt, sentence, chunk = await asyncio.gather(
            self._last(conversation_id, TtsDone.type),
            self._last(conversation_id, Interrupt.type),
            self._last(conversation_id, SentenceDone.type),
            self._last(conversation_id, TtsAudioChunk.type),
        )
        if isinstance(done, TtsDone) and done.utterance_id == utterance_id:
            r.finished = r.known = True
        if isinstance(interrupt, Interrupt) and interrupt.utterance_id == utterance_id:
            r.cancelled = True
        if isinstance(sentence, SentenceDone) and sentence.utterance_id == utterance_id:
            r.next_index, r.known = sentence.sentence_index + 1, True
        if isinstance(chunk, TtsAudioChunk) and chunk.utterance_id == utterance_id:
            r.seq = chunk.seq + 1
            r.audio_ms = r.seq * self.tts.chunk_ms  # close enough for the done summary
            if chunk.sentence_index >= r.next_index:
                # Killed mid-sentence: the redelivered sentence is spoken again from its first
                # chunk, which must get the seq it had (the re-published ids are dropped as
                # duplicates; the rest continue the sequence without a gap).
                first = chunk.seq - round(chunk.offset_ms * chunk.rate / 1000 / self.chunk_samples)
                r.sentence_start[chunk.sentence_index] = (first, first * self.tts.chunk_ms)
        return r

    # -- handlers ------------------------------------------------------------------------

    async def handle(self, event: Event, delivery: Delivery) -> None:
        if isinstance(event, ReplySentence):
            try:
                await self._on_sentence(event)
            except NotYet:
                raise
            except Exception as exc:
                if delivery.num_delivered < SYNTH_ATTEMPTS:
                    raise  # retried: a passing fault (bus hiccup) heals itself
                await self._give_up(event, exc)
        elif isinstance(event, ReplyDone):
            await self._on_reply_done(event)

    async def _give_up(self, s: ReplySentence, exc: Exception) -> None:
        """A sentence that keeps failing ends its reply with an error instead of blocking
        every later sentence behind it."""
        log.error("synthesis failed", extra={"index": s.index, "error": repr(exc)})
        r = await self.reply(s.conversation_id, s.utterance_id)
        r.cancelled = True
        await self.bus.publish(
            ControlError(
                event_id=derive_id(s.event_id, "tts-error"),
                conversation_id=s.conversation_id,
                utterance_id=s.utterance_id,
                producer=self.worker_id,
                failed_stage="tts",
                code="synthesis-failed",
                message=f"{exc.__class__.__name__}: {exc}"[:4096],
                cause_event_id=s.event_id,
            )
        )
        await self._finish(r, s, derive_id(s.event_id, "tts-done"), interrupted=True)

    async def handle_control(self, event: Event, delivery: Delivery) -> None:
        if not isinstance(event, Interrupt):
            return
        r = await self.reply(event.conversation_id, event.utterance_id)
        r.cancelled = True
        if r.known and not r.finished:
            await self._finish(r, event, derive_id(event.event_id, "tts-done"), interrupted=True)
            log.info("interrupted", extra={"utterance": event.utterance_id, "reason": event.reason})

    async def _on_sentence(self, s: ReplySentence) -> None:
        r = await self.reply(s.conversation_id, s.utterance_id)
        r.known = True
        if r.cancelled or r.finished or s.index < r.next_index:
            return  # interrupted, or already spoken (a redelivery)
        if s.index > r.next_index:
            raise NotYet(f"sentence {s.index} waits for sentence {r.next_index}")
        await self._speak(s, r)
        if not r.cancelled:
            r.next_index += 1

    async def _on_reply_done(self, d: ReplyDone) -> None:
        r = await self.reply(d.conversation_id, d.utterance_id)
        r.known = True
        if r.finished or r.cancelled:
            return
        if r.next_index < d.sentences:
            raise NotYet(f"done waits for sentence {r.next_index} of {d.sentences}")
        await self._finish(r, d, derive_id(d.event_id, "tts-done"), interrupted=False)

    async def _finish(self, r: Reply, cause: Event, event_id: str, interrupted: bool) -> None:
        async with r.lock:
            if r.finished:
                return
            await self.bus.publish(
                TtsDone(
                    event_id=event_id,
                    conversation_id=cause.conversation_id,
                    utterance_id=cause.utterance_id,
                    producer=self.worker_id,
                    sentences=r.next_index,
                    chunks=r.seq,
                    audio_ms=round(r.audio_ms, 3),
                    interrupted=interrupted,
                )
            )
            r.finished = True

    # -- synthesis -----------------------------------------------------------------------

    async def _speak(self, s: ReplySentence, r: Reply) -> None:
        t_arrival = time.perf_counter()
        if s.index in r.sentence_start:  # retried after a failure: same seqs again
            r.seq, r.audio_ms = r.sentence_start[s.index]
        r.sentence_start[s.index] = (r.seq, r.audio_ms)
        rate = self.tts.output_rate
        rechunk = Rechunker(self.backend.sample_rate, rate, self.chunk_samples)
        limit = self.tts.first_clause_chars if s.index == 0 else self.tts.clause_split_chars
        pieces = self._pieces(s.text, limit)
        n_chunks, samples, compute_s = 0, 0, 0.0
        first_audio_ms: float | None = None
        with _tracer.start_as_current_span(
            "tts.synthesize",
            attributes={
                "tts.backend": self.backend.name,
                "tts.sentence_index": s.index,
                "tts.chars": len(s.text),
                "voice.conversation_id": s.conversation_id,
                "voice.utterance_id": s.utterance_id,
            },
        ) as span:
            try:
                while not r.cancelled:
                    t0 = time.perf_counter()
                    piece = await asyncio.to_thread(next, pieces, None)
                    compute_s += time.perf_counter() - t0
                    chunks = rechunk.flush() if piece is None else rechunk.push(piece)
                    for pcm in chunks:
                        if not await self._publish_chunk(s, r, pcm, n_chunks, samples):
                            break
                        if first_audio_ms is None:
                            first_audio_ms = 1000 * (time.perf_counter() - t_arrival)
                        n_chunks += 1
                        samples += len(pcm)
                    if piece is None:
                        break
            finally:
                close = getattr(pieces, "close", None)
                if close is not None:
                    close()
            audio_ms = 1000.0 * samples / rate
            rtf = compute_s / (audio_ms / 1000) if audio_ms else 0.0
            span.set_attribute("tts.first_audio_ms", round(first_audio_ms or 0.0, 3))
            span.set_attribute("tts.real_time_factor", round(rtf, 4))
            span.set_attribute("tts.audio_ms", round(audio_ms, 3))
            span.set_attribute("tts.chunks", n_chunks)
            span.set_attribute("tts.interrupted", r.cancelled)
        if r.cancelled:
            return
        await self.bus.publish(
            SentenceDone(
                event_id=derive_id(s.event_id, "sentence-done"),
                conversation_id=s.conversation_id,
                utterance_id=s.utterance_id,
                seq=s.index,
                producer=self.worker_id,
                sentence_index=s.index,
                text=s.text,
                audio_ms=round(audio_ms, 3),
                first_audio_ms=round(first_audio_ms or 0.0, 3),
                real_time_factor=round(rtf, 4),
            )
        )
        log.debug(
            "sentence synthesized",
            extra={"index": s.index, "audio_ms": round(audio_ms), "rtf": round(rtf, 3)},
        )

    def _pieces(self, text: str, max_chars: int) -> Iterator[np.ndarray]:
        for clause in split_clauses(text, max_chars):
            yield from self.backend.synthesize(clause)

    async def _publish_chunk(
        self, s: ReplySentence, r: Reply, pcm: np.ndarray, i: int, offset_samples: int
    ) -> bool:
        """Publish chunk `i` of sentence `s`; False once the reply is interrupted."""
        rate = self.tts.output_rate
        async with r.lock:
            if r.cancelled or r.finished:
                return False
            await self.bus.publish(
                TtsAudioChunk(
                    event_id=derive_id(s.event_id, "chunk", i),
                    conversation_id=s.conversation_id,
                    utterance_id=s.utterance_id,
                    seq=r.seq,
                    producer=self.worker_id,
                    rate=rate,
                    sentence_index=s.index,
                    offset_ms=round(1000.0 * offset_samples / rate, 3),
                    audio=pcm.tobytes(),
                )
            )
            r.seq += 1
            r.audio_ms += 1000.0 * len(pcm) / rate
        return True
