"""The tts worker: a reply's sentences in, its audio chunks out as soon as the first audio exists.

Scale-out works like the stt's: every instance binds the shared durable "tts"
(`schemas.routing.TTS`) on `llm.reply-started` of the endpoints it serves (TTS_MAX_CONCURRENT
pull loops, one reply each); JetStream hands each reply to one instance, which owns it:
- it announces the reply's audio with `tts.started` (the endpoint's speaker claims it there),
- follows the reply's sentences, reply-done and interrupts in stream order from the
  reply-started on, synthesizes the sentences in index order, and
- acks the reply-started only once `tts.done` is on the bus, keeping it alive meanwhile.
If the owner dies, the reply-started comes back to another instance after TTS_ACK_WAIT_S;
it recovers the position from the last tts events of the conversation and continues: a
sentence cut mid-way is spoken again from its start under the same ids and seqs, so
JetStream drops what was already published and the chunk sequence has no gap.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from opentelemetry.context import Context

from schemas import (
    ControlError,
    Event,
    Interrupt,
    ReplyDiscarded,
    ReplyDone,
    ReplySentence,
    ReplyStarted,
    SentenceDone,
    TtsAudioChunk,
    TtsDone,
    TtsStarted,
    derive_id,
)
from schemas.routing import TTS
from workers.runtime.bus import Bus, Consumer, Delivery, Follower, Released
from workers.runtime.config import Settings
from workers.runtime.service import Worker
from workers.runtime.telemetry import tracer
from workers.tts.backends import TtsBackend, make_backend, split_clauses
from workers.tts.config import TtsSettings, get_tts_settings
from workers.tts.stream import Rechunker
from workers.tts.turns import FirstAudioFirst

log = logging.getLogger("voicebus.tts")
_tracer = tracer("workers.tts")
MAX_DELIVER = 5
"""Deliveries of a reply-started before a failing reply ends with control.error."""
SYNTH_ATTEMPTS = 2
"""Tries of one sentence before the reply ends with control.error (a model that fails on a
sentence fails the same way again: the reply must not block everything behind it)."""


#: A reply's first audio starts at its first sample this loud (about -46 dBFS), less a few
#: milliseconds so the onset keeps its shape. Piper's voices open with 30-70 ms of near
#: silence that the listener would wait through.
LEAD_IN_THRESHOLD = 164
LEAD_IN_KEEP_MS = 5


def trim_leading_silence(pcm: np.ndarray, rate: int) -> np.ndarray:
    """`pcm` from its first audible sample on (all of it if it never gets loud)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > LEAD_IN_THRESHOLD)
    if not len(loud):
        return pcm
    return pcm[max(0, int(loud[0]) - rate * LEAD_IN_KEEP_MS // 1000) :]


class ReplyFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Reply:
    """What the owner knows about the reply it synthesizes."""

    started: ReplyStarted
    next_index: int = 0
    """Next sentence to speak; also the number spoken so far."""
    seq: int = 0
    """Next tts.audio-chunk seq."""
    audio_ms: float = 0.0
    cancelled: bool = False
    finished: bool = False
    """tts.done is on the bus."""
    expected: int | None = None
    """Sentences the reply has, once its reply-done arrived."""
    sentence_start: dict[int, tuple[int, float]] = field(default_factory=dict)
    """Sentence index -> (seq, audio_ms) when it started: a re-spoken sentence reuses them."""
    queue: asyncio.Queue[tuple[ReplySentence, Context] | None] = field(
        default_factory=asyncio.Queue
    )
    """Sentences to speak, in order, with their trace context; None at the reply's end."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while a chunk or tts.done is published, so nothing follows tts.done."""

    @property
    def turn(self) -> dict[str, str]:
        s = self.started
        return {
            "endpoint": s.endpoint,
            "conversation_id": s.conversation_id,
            "utterance_id": s.utterance_id,
        }

    @property
    def common(self) -> dict[str, str]:
        """The fields of this reply's events: its turn and its generation."""
        return {**self.turn, "generation": self.started.generation}

    def owns(self, event: Event) -> bool:
        """Whether `event` belongs to this reply (its turn and its generation)."""
        return event.utterance_id == self.started.utterance_id and (
            getattr(event, "generation", "") == self.started.generation
        )


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
        self._turns = FirstAudioFirst(self.tts.first_audio_first)
        self.replies: collections.OrderedDict[str, Reply] = collections.OrderedDict()
        """Replies this process owns now, by utterance id."""

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
            self.route_consumer(
                TTS,
                self.on_reply_started,
                batch=1,  # one reply per pull loop: the others stay for other instances
                ack_wait=self.tts.ack_wait_s,
                max_deliver=MAX_DELIVER,
                max_ack_pending=10_000,
            )
            for _ in range(max(1, self.tts.max_concurrent))
        ]

    # -- one reply -----------------------------------------------------------------------

    async def on_reply_started(self, event: Event, d: Delivery) -> None:
        assert isinstance(event, ReplyStarted)
        if not await self.bindings.goes_to(event.endpoint, event.conversation_id, "tts"):
            return  # answered in text only (`just ask`, Wyoming handle): nothing to speak
        # By reply-started id: one per generation, so a turn answered again (a speculation
        # discarded, a reply abandoned by a dead llm) is served while the old one winds down.
        if event.event_id in self.replies:
            d.defer()  # redelivered while this process still owns it: the owner acks it
            return
        async with d.working(max(0.2, self.tts.ack_wait_s / 3)):
            r = await self._recover(event)
            self.replies[event.event_id] = r
            try:
                await self._serve(r, d)
            except ReplyFailed as exc:
                await self._fail(r, exc.code, str(exc))
            except Released:
                raise
            except Exception as exc:
                if d.num_delivered < MAX_DELIVER and not self.stopping.is_set():
                    raise  # nak: retried, possibly by another instance
                await self._fail(r, "synthesis-failed", f"{exc.__class__.__name__}: {exc}")
            finally:
                self.replies.pop(event.event_id, None)

    async def _serve(self, r: Reply, d: Delivery) -> None:
        if r.finished:
            return  # tts.done was published before the last owner died: nothing left to do
        await self.bus.publish(
            TtsStarted(
                event_id=derive_id(r.started.event_id, "tts-started"),
                producer=self.worker_id,
                rate=self.tts.output_rate,
                voice=self.backend.name[:256],
                speculative=r.started.speculative,
                **r.common,
            )
        )
        filters = TTS.follow_filters(r.started.endpoint, r.started.conversation_id)
        async with self.bus.follow(filters, d.stream_seq + 1) as follower:
            reader = asyncio.create_task(self._read(r, follower))
            try:
                await self._speak_all(r, reader)
            finally:
                reader.cancel()
        await self._finish(r, derive_id(r.started.event_id, "tts-done"))

    async def _read(self, r: Reply, follower: Follower) -> None:
        """Hand the reply's sentences to the synthesis loop in order; stop it at once on an
        interrupt; close the queue at reply-done."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not r.cancelled:
            if self.stopping.is_set():
                # Nak'd: another instance takes the reply over now, from where it stands.
                raise Released("tts stopping; reply handed back")
            got = await follower.next(timeout=0.5)
            if got is None:
                if loop.time() - last > self.tts.reply_timeout_s:
                    raise ReplyFailed(
                        "reply-timeout",
                        f"no sentence or reply-done for {self.tts.reply_timeout_s:.0f} s "
                        f"after sentence {r.next_index}",
                    )
                continue
            event = got.event
            if event is None or event.utterance_id != r.started.utterance_id:
                continue
            if isinstance(event, ReplyDiscarded):
                if event.generation == r.started.generation:
                    r.cancelled = True  # a speculation the user did not end up asking for
                    await self._finish(r, derive_id(event.event_id, "tts-done"))
                continue
            if not isinstance(event, Interrupt) and not r.owns(event):
                continue  # another generation of the same turn
            last = loop.time()
            if isinstance(event, Interrupt):
                r.cancelled = True
                log.info("interrupted", extra={"utterance": event.utterance_id})
                # At once: the sentence being synthesized stops at its next piece.
                await self._finish(r, derive_id(event.event_id, "tts-done"))
            elif isinstance(event, ReplySentence):
                if event.index >= r.next_index:  # lower: spoken before an owner restarted
                    r.queue.put_nowait((event, got.context))
            elif isinstance(event, ReplyDone):
                r.expected = event.sentences
                if event.interrupted and event.sentences == 0:
                    r.cancelled = True
                r.queue.put_nowait(None)
                return
        r.queue.put_nowait(None)

    async def _speak_all(self, r: Reply, reader: asyncio.Task[None]) -> None:
        while not r.cancelled:
            get = asyncio.create_task(r.queue.get())
            await asyncio.wait([get, reader], return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                reader.result()  # the reader failed (e.g. reply-timeout): raise it here
                return
            item = get.result()
            if item is None:
                return
            s, ctx = item
            if s.index != r.next_index:
                raise ReplyFailed(
                    "sentence-gap", f"sentence {s.index} arrived, {r.next_index} missing"
                )
            for attempt in range(1, SYNTH_ATTEMPTS + 1):
                try:
                    await self._speak(s, r, ctx)
                    break
                except Exception as exc:
                    if attempt == SYNTH_ATTEMPTS:
                        raise ReplyFailed(
                            "synthesis-failed", f"{exc.__class__.__name__}: {exc}"
                        ) from exc
                    log.warning("synthesis failed; trying again", extra={"error": repr(exc)})
            if not r.cancelled:
                r.next_index += 1

    async def _fail(self, r: Reply, code: str, message: str) -> None:
        """A reply that cannot be synthesized ends with an error instead of blocking."""
        log.error("synthesis failed", extra={"code": code, "error": message})
        r.cancelled = True
        await self.bus.publish(
            ControlError.of(r.started, "tts", code, message, producer=self.worker_id)
        )
        await self._finish(r, derive_id(r.started.event_id, "tts-done"))

    async def _finish(self, r: Reply, event_id: str) -> None:
        async with r.lock:
            if r.finished:
                return
            interrupted = r.cancelled or (r.expected is not None and r.next_index < r.expected)
            await self.bus.publish(
                TtsDone(
                    event_id=event_id,
                    producer=self.worker_id,
                    sentences=r.next_index,
                    chunks=r.seq,
                    audio_ms=round(r.audio_ms, 3),
                    interrupted=interrupted,
                    **r.common,
                )
            )
            r.finished = True

    # -- recovery ------------------------------------------------------------------------

    async def _recover(self, started: ReplyStarted) -> Reply:
        """Where a reply stands if an earlier owner worked on it (a redelivery), from the
        last tts events of the conversation; a fresh Reply otherwise."""
        r = Reply(started)
        done, sentence, chunk = await asyncio.gather(
            self.bus.last(started.endpoint, started.conversation_id, TtsDone.type),
            self.bus.last(started.endpoint, started.conversation_id, SentenceDone.type),
            self.bus.last(started.endpoint, started.conversation_id, TtsAudioChunk.type),
        )
        if isinstance(done, TtsDone) and r.owns(done):
            r.finished = True
        if isinstance(sentence, SentenceDone) and r.owns(sentence):
            r.next_index = sentence.sentence_index + 1
        if isinstance(chunk, TtsAudioChunk) and r.owns(chunk):
            r.seq = chunk.seq + 1
            r.audio_ms = r.seq * self.tts.chunk_ms  # close enough for the done summary
            if chunk.sentence_index >= r.next_index:
                # Killed mid-sentence: the sentence is spoken again from its first chunk,
                # which must get the seq it had (the re-published ids are dropped as
                # duplicates; the rest continue the sequence without a gap).
                first = chunk.seq - round(chunk.offset_ms * chunk.rate / 1000 / self.chunk_samples)
                r.sentence_start[chunk.sentence_index] = (first, first * self.tts.chunk_ms)
        return r

    # -- synthesis -----------------------------------------------------------------------

    async def _speak(self, s: ReplySentence, r: Reply, ctx: Context | None = None) -> None:
        t_arrival = time.perf_counter()
        if s.index in r.sentence_start:  # spoken again after a restart: same seqs again
            r.seq, r.audio_ms = r.sentence_start[s.index]
        r.sentence_start[s.index] = (r.seq, r.audio_ms)
        rate = self.tts.output_rate
        rechunk = Rechunker(self.backend.sample_rate, rate, self.chunk_samples)
        limit = self.tts.first_clause_chars if s.index == 0 else self.tts.clause_split_chars
        # The user's language (the transcript's, carried by llm.reply-started): XTTS speaks
        # it when it can; Piper's single voice ignores it.
        pieces = self._pieces(s.text, limit, r.started.language or None)
        n_chunks, samples, compute_s = 0, 0, 0.0
        first_audio_ms: float | None = None
        with _tracer.start_as_current_span(
            "tts.synthesize",
            context=ctx,
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
                    first = s.index == 0 and samples == 0
                    async with self._turns.turn(first):
                        t0 = time.perf_counter()
                        piece = await asyncio.to_thread(next, pieces, None)
                        compute_s += time.perf_counter() - t0
                    if piece is not None and s.index == 0 and samples == 0 and not n_chunks:
                        # The first sound the user waits for: the voice's lead-in silence
                        # would only make the wait longer.
                        piece = trim_leading_silence(piece, self.backend.sample_rate)
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
        if r.cancelled or r.finished:
            return
        await self.bus.publish(
            SentenceDone(
                event_id=derive_id(s.event_id, "sentence-done"),
                seq=s.index,
                producer=self.worker_id,
                sentence_index=s.index,
                text=s.text,
                audio_ms=round(audio_ms, 3),
                first_audio_ms=round(first_audio_ms or 0.0, 3),
                real_time_factor=round(rtf, 4),
                **r.common,
            )
        )
        log.debug(
            "sentence synthesized",
            extra={"index": s.index, "audio_ms": round(audio_ms), "rtf": round(rtf, 3)},
        )

    def _pieces(
        self, text: str, max_chars: int, language: str | None = None
    ) -> Iterator[np.ndarray]:
        for clause in split_clauses(text, max_chars):
            yield from self.backend.synthesize(clause, language)

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
                    seq=r.seq,
                    producer=self.worker_id,
                    rate=rate,
                    sentence_index=s.index,
                    offset_ms=round(1000.0 * offset_samples / rate, 3),
                    audio=pcm.tobytes(),
                    **r.common,
                )
            )
            r.seq += 1
            r.audio_ms += 1000.0 * len(pcm) / rate
        return True
