"""Playing an endpoint's replies and saying exactly how much of each was heard.

A `Player` is the speaker side of one endpoint (the speaker worker, the web gateway, the
Wyoming bridge). It claims the endpoint's replies on `tts.started` through a durable shared
by every player of that endpoint (`schemas.routing.SPEAKER`, one message each): the claiming
instance owns the reply. The owner follows the reply's audio, sentence ends, tts.done,
interrupts and the conversation's voice onsets in stream order, plays the audio into its
sink, and publishes `speaker.playback-started` at the first sample heard and
`speaker.playback-done` (how much was heard) at the end; only then is the claim acked.

- Replies of one conversation are never audible at the same time: a player plays them one
  after another, and waits while another instance's reply of the conversation plays.
- Barge-in: a voice onset of another utterance of the conversation while a reply is owned
  stops it where it is (nothing heard, if it had not started) and publishes
  control.interrupt for the llm and tts. An onset that came before the claim (after the
  turn's end of speech or transcript, before tts.started) counts too: the reply is dropped
  unheard, held speculative audio included. Whether an onset counts is one function,
  `Player.counts_as_barge_in`, with a `barge_in_gate` hook (an echo canceller that is not
  trusted yet may veto onsets heard while a reply plays).
- If an owner dies, the claim comes back to another player after `ack_wait_s`. If the reply
  had started playing, how much was heard is unknown: the turn ends with control.error
  "speaker-restarted". Otherwise it is played from the start.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.context import Context

from schemas import (
    ControlError,
    Event,
    Interrupt,
    PlaybackDone,
    PlaybackStarted,
    ReplyCommitted,
    ReplyDiscarded,
    SentenceDone,
    Transcript,
    TtsAudioChunk,
    TtsDone,
    TtsStarted,
    VoiceStarted,
    VoiceStopped,
    derive_id,
)
from schemas.routing import SPEAKER
from workers.runtime.audio import resample_pcm16
from workers.runtime.bus import Bus, Delivery, Follower, Released
from workers.runtime.endpoint.reference import ReferenceStream
from workers.runtime.endpoint.sinks import Output, Sink
from workers.runtime.telemetry import tracer

log = logging.getLogger("voicebus.speaker")
_tracer = tracer("workers.speaker")


@dataclass(frozen=True)
class PlaybackConfig:
    barge_in: bool = True
    """Stop a reply when the user starts speaking over it."""
    ack_wait_s: float = 5.0
    """A claimed reply is kept alive every third of this; a dead owner's comes back after it."""
    reply_timeout_s: float = 60.0
    """A reply whose tts goes silent this long (no chunk, no tts.done) ends with an error."""
    order_wait_s: float = 60.0
    """Longest wait for another instance's reply of the same conversation to stop playing."""
    commit_wait_s: float = 60.0
    """Longest wait for a speculative reply to be committed before it is dropped unheard."""
    echo_reference: bool = False
    """Publish what is played (`speaker.reference`) for the mic's echo canceller."""


@dataclass
class Playback:
    """One reply on its way to the listener."""

    started_event: TtsStarted
    rate: int
    output: Output | None = None
    """Opened when the reply's turn to play comes (earlier replies of the conversation first)."""
    pending: list[bytes] = field(default_factory=list)
    samples: int = 0
    last_seq: int = -1
    first_chunk: TtsAudioChunk | None = None
    first_context: Context | None = None
    """Trace context of the first audio chunk: the playback span is a child of its
    synthesis."""
    marks: list[tuple[int, int]] = field(default_factory=list)
    """(sentence_index, first sample) in play order."""
    sentence_end: dict[int, int] = field(default_factory=dict)
    tts_done: TtsDone | None = None
    started: bool = False
    finished: bool = False
    barged_in: bool = False
    """Stopped by an onset (set before the stop's first await: one stop per reply, whether
    the onset came from this process's own capture or from the bus)."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    committed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at once for a reply that is not speculative; else by llm.reply-committed."""
    discarded: bool = False
    published: asyncio.Event = field(default_factory=asyncio.Event)
    """playback-done is on the bus."""
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    span: trace.Span | None = None
    reference: ReferenceStream | None = None

    @property
    def conversation_id(self) -> str:
        return self.started_event.conversation_id

    @property
    def utterance_id(self) -> str:
        return self.started_event.utterance_id

    @property
    def turn(self) -> dict[str, str]:
        e = self.started_event
        return {
            "endpoint": e.endpoint,
            "conversation_id": e.conversation_id,
            "utterance_id": e.utterance_id,
        }

    @property
    def common(self) -> dict[str, str]:
        """The fields of this reply's events: its turn and its generation."""
        return {**self.turn, "generation": self.started_event.generation}

    def owns(self, event: Event) -> bool:
        """Whether `event` belongs to this reply (its turn and its generation)."""
        return event.utterance_id == self.utterance_id and (
            getattr(event, "generation", "") == self.started_event.generation
        )

    def heard(self, played: int) -> tuple[int, int, float]:
        """(sentences heard to their end, sentence playing at `played`, ms into it)."""
        complete = sum(1 for end in self.sentence_end.values() if end <= played)
        if played <= 0 or not self.marks:
            return complete, -1, 0.0
        index, start = next((i, s) for i, s in reversed(self.marks) if s <= played - 1)
        return complete, index, 1000.0 * (played - start) / self.rate


BargeInGate = Callable[["Playback", VoiceStarted], bool]
"""Whether a voice onset of another utterance may stop this reply (True: it may)."""


def always(_pb: Playback, _onset: VoiceStarted) -> bool:
    return True


class Player:
    """The speaker side of an endpoint; `on_tts_started` is the handler of its claims."""

    def __init__(
        self,
        bus: Bus,
        sink: Sink,
        producer: str,
        config: PlaybackConfig,
        barge_in_gate: BargeInGate = always,
    ) -> None:
        self.bus = bus
        self.barge_in_gate = barge_in_gate
        """Consulted for every onset that would stop a reply (`pb.started` says whether
        any of it is audible yet)."""
        self.sink = sink
        self.producer = producer
        self.config = config
        self.order: dict[str, collections.deque[Playback]] = collections.defaultdict(
            collections.deque
        )
        """Owned replies per conversation, in the order they play."""
        self.stopping = asyncio.Event()

    # -- a claimed reply -----------------------------------------------------------------

    async def on_tts_started(self, event: Event, d: Delivery) -> None:
        assert isinstance(event, TtsStarted)
        async with d.working(max(0.2, self.config.ack_wait_s / 3)):
            if d.num_delivered > 1:
                state = await self._earlier_owner(event)
                if state == "done":
                    return  # played and recorded; only the ack was lost
                if state == "playing":
                    await self._restarted(event)
                    return
            pb = Playback(event, event.rate)
            if not event.speculative:
                pb.committed.set()
            else:
                # The decision may have come before this claim (the follower starts after it).
                for decided_type in (ReplyCommitted.type, ReplyDiscarded.type):
                    decided = await self.bus.last(
                        pb.started_event.endpoint, pb.conversation_id, decided_type
                    )
                    if decided is not None and pb.owns(decided):
                        if isinstance(decided, ReplyCommitted):
                            pb.committed.set()
                        else:
                            return  # discarded before it was claimed: never heard
            if (event.width, event.channels) != (2, 1):
                # The sinks play 16-bit mono; a reply in another format ends, said so.
                await self._error(
                    pb,
                    "unsupported-audio",
                    f"{8 * event.width}-bit, {event.channels} channels: the speaker plays "
                    "16-bit mono (set the tts output format)",
                )
                return
            queue = self.order[pb.conversation_id]
            queue.append(pb)
            try:
                filters = SPEAKER.follow_filters(event.endpoint, event.conversation_id)
                async with self.bus.follow(filters, d.stream_seq + 1) as follower:
                    # The follower sees what comes after tts.started; an onset before it
                    # (the user went on while the answer was being made) is looked up.
                    early = await self._spoken_over(pb)
                    if early is not None:
                        await self._barge_in(pb, early)
                    await self._play(pb, follower)
            finally:
                with contextlib.suppress(ValueError):
                    queue.remove(pb)
                if not queue:
                    self.order.pop(pb.conversation_id, None)
                if pb.output is not None and not pb.finished:
                    pb.output.close()
                pb.ended.set()

    async def _play(self, pb: Playback, follower: Follower) -> None:
        watch = asyncio.create_task(self._watch(pb))
        try:
            loop = asyncio.get_running_loop()
            last = loop.time()
            while not pb.finished:
                if self.stopping.is_set():
                    raise Released("speaker stopping; reply handed back")
                got = await follower.next(timeout=0.2)
                if got is None:
                    if pb.tts_done is None and loop.time() - last > self.config.reply_timeout_s:
                        await self._error(pb, "tts-silent", "no audio or tts.done in time")
                        await self._finish(pb, derive_id(pb.started_event.event_id, "timeout"))
                    continue
                last = loop.time()
                if got.event is not None:
                    if (
                        pb.first_context is None
                        and isinstance(got.event, TtsAudioChunk)
                        and pb.owns(got.event)  # not a discarded speculation's late chunk
                    ):
                        pb.first_context = got.context
                    await self._on_event(pb, got.event)
            await pb.published.wait()  # finished by the watcher: its publish completes first
        finally:
            watch.cancel()

    async def _on_event(self, pb: Playback, e: Event) -> None:
        if isinstance(e, VoiceStarted):
            await self._barge_in(pb, e)
            return
        if isinstance(e, Interrupt):
            if e.utterance_id == pb.utterance_id:
                await self._finish(pb, derive_id(e.event_id, "playback-done"), interrupted=True)
            return
        if not pb.owns(e):
            return  # another turn, or another generation of this one
        if isinstance(e, ReplyCommitted):
            pb.committed.set()
        elif isinstance(e, ReplyDiscarded):
            self._drop(pb)
        if isinstance(e, TtsAudioChunk):
            self._on_chunk(pb, e)
        elif isinstance(e, SentenceDone):
            pb.sentence_end[e.sentence_index] = pb.samples
        elif isinstance(e, TtsDone):
            pb.tts_done = e
            pb.changed.set()

    def _on_chunk(self, pb: Playback, c: TtsAudioChunk) -> None:
        if c.seq <= pb.last_seq:
            return  # re-published by a restarted tts
        pb.last_seq = c.seq
        if pb.first_chunk is None:
            pb.first_chunk = c
        pcm = c.audio if c.rate == pb.rate else resample_pcm16(c.audio, c.rate, pb.rate)
        if not pb.marks or pb.marks[-1][0] != c.sentence_index:
            pb.marks.append((c.sentence_index, pb.samples))
        pb.samples += len(pcm) // 2
        if pb.output is not None:
            self._write(pb, pcm)
        else:
            pb.pending.append(pcm)
        pb.changed.set()

    def _write(self, pb: Playback, pcm: bytes) -> None:
        assert pb.output is not None
        if pb.reference is not None and not pb.finished:
            pb.reference.queued(pcm, ReferenceStream.play_time(pb.output))
        pb.output.write(pcm)

    def _drop(self, pb: Playback) -> None:
        """A discarded speculation: never heard, so it ends without a trace of playback."""
        pb.discarded = pb.finished = True
        pb.changed.set()
        pb.committed.set()
        pb.published.set()
        log.info("speculation discarded", extra={"utterance": pb.utterance_id})

    async def _watch(self, pb: Playback) -> None:
        """Open the output when the reply's turn comes; publish playback-started at the first
        sample heard and playback-done at the last."""
        # A speculative reply is synthesized (and buffered here) while the end-pointer still
        # waits; it is heard only once the turn is confirmed as the one it answers.
        try:
            await asyncio.wait_for(pb.committed.wait(), self.config.commit_wait_s)
        except TimeoutError:  # nobody decided (its llm died): it was never the answer
            self._drop(pb)
        if pb.finished:
            return
        await self._wait_turn(pb)
        if pb.finished:
            return
        pb.output = out = self.sink.open(pb.rate, pb.conversation_id, pb.utterance_id)
        if self.config.echo_reference and getattr(out, "realtime", True):
            pb.reference = ReferenceStream(self.bus, pb.rate, pb.common, self.producer)
        for pcm in pb.pending:
            self._write(pb, pcm)
        pb.pending.clear()
        while not pb.finished:
            if out.played() > 0:
                await self._started(pb)
                break
            if pb.tts_done is not None and out.queued() == 0:
                # Nothing to play (an empty reply, or cut before its first audio).
                done = pb.tts_done
                event_id = derive_id(done.event_id, "playback-done")
                await self._finish(pb, event_id, interrupted=done.interrupted)
                return
            # A device's clock is only visible by polling it (the WAV clock starts at once).
            pb.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pb.changed.wait(), 0.002)
        while not pb.finished:
            played, queued = out.played(), out.queued()
            if played < queued:
                await asyncio.sleep(max(0.001, (queued - played) / pb.rate))
            elif pb.tts_done is not None:
                await self._finish(pb, derive_id(pb.tts_done.event_id, "playback-done"))
            else:
                pb.changed.clear()
                await pb.changed.wait()

    async def _wait_turn(self, pb: Playback) -> None:
        """Wait until no earlier reply of the conversation is audible, in this process or in
        another instance of this endpoint."""
        queue = self.order[pb.conversation_id]
        for earlier in list(queue):
            if earlier is pb:
                break
            await earlier.ended.wait()
        deadline = time.monotonic() + self.config.order_wait_s
        while not pb.finished and time.monotonic() < deadline:
            if not await self._other_playing(pb):
                return
            await asyncio.sleep(0.02)

    async def _other_playing(self, pb: Playback) -> bool:
        """Whether the conversation's last reply to start playing is another one that has
        not ended (played out, or ended by an error)."""
        started = await self.bus.last(
            pb.started_event.endpoint, pb.conversation_id, PlaybackStarted.type
        )
        if started is None or started.utterance_id == pb.utterance_id:
            return False
        for ended_type in (PlaybackDone.type, ControlError.type):
            ended = await self.bus.last(pb.started_event.endpoint, pb.conversation_id, ended_type)
            if ended is not None and ended.utterance_id == started.utterance_id:
                return False
        return True

    async def _started(self, pb: Playback) -> None:
        pb.started = True
        first = pb.first_chunk
        await self.bus.publish(
            PlaybackStarted(
                event_id=derive_id(pb.started_event.event_id, "playback-started"),
                producer=self.producer,
                sink=self.sink.kind,
                **pb.common,
            )
        )
        pb.span = _tracer.start_span(
            "speaker.playback",
            context=pb.first_context,
            attributes={
                "speaker.sink": self.sink.kind,
                "voice.conversation_id": pb.conversation_id,
                "voice.utterance_id": pb.utterance_id,
                "speaker.first_audio_latency_ms": round(1000.0 * (time.time() - first.ts), 3)
                if first
                else 0.0,
            },
        )

    async def _finish(self, pb: Playback, event_id: str, interrupted: bool = False) -> None:
        if pb.finished:
            return
        pb.finished = True  # before any await: one finish per reply
        pb.changed.set()
        played = 0
        if pb.output is not None:
            played = pb.output.halt() if interrupted else pb.output.played()
            if interrupted and pb.reference is not None:
                pb.reference.halted(time.time())
        complete, last_index, last_ms = pb.heard(played)
        played_ms = 1000.0 * played / pb.rate
        path = ""
        if pb.output is not None:
            # The reply's WAV exists before anyone reads its path from playback-done.
            path = await asyncio.to_thread(pb.output.close)
        # Stamped now: ts is the moment the audio stopped, not when the file was written.
        await self.bus.publish(
            PlaybackDone(
                event_id=event_id,
                producer=self.producer,
                played_ms=round(played_ms, 3),
                interrupted=interrupted,
                sentences_heard=complete,
                last_sentence_index=last_index,
                last_sentence_played_ms=round(last_ms, 3),
                wav=path or "",
                **pb.common,
            )
        )
        pb.published.set()
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

    def counts_as_barge_in(self, pb: Playback, onset: VoiceStarted) -> bool:
        """Whether `onset` stops the reply `pb`: barge-in is on, the onset is another
        utterance of the conversation, and the gate lets it through."""
        return (
            self.config.barge_in
            and not pb.finished
            and not pb.barged_in
            and onset.utterance_id != pb.utterance_id
            and self.barge_in_gate(pb, onset)
        )

    async def _spoken_over(self, pb: Playback) -> VoiceStarted | None:
        """The conversation's latest voice onset if the user started it after the turn this
        reply answers (so before the reply could be heard), else None.

        A capture's utterances never overlap and each one's onset precedes its end and its
        transcript, so stream order settles it: the onset is later than this turn's end of
        speech; or, if the turn had no voice (a typed question) or a later utterance has
        ended too, later than this turn's transcript, or part of an utterance that ended
        after it."""
        if not self.config.barge_in:
            return None
        ep, conv = pb.started_event.endpoint, pb.conversation_id
        found = await self.bus.last_at(ep, conv, VoiceStarted.type)
        if found is None or not isinstance(found[0], VoiceStarted):
            return None
        onset, onset_seq = found
        if onset.utterance_id == pb.utterance_id:
            return None
        ended = await self.bus.last_at(ep, conv, VoiceStopped.type)
        if ended is not None and ended[0].utterance_id == pb.utterance_id:
            return onset if onset_seq > ended[1] else None
        said = await self.bus.last_at(ep, conv, Transcript.type)
        if said is None or said[0].utterance_id != pb.utterance_id:
            return onset  # a later utterance was already transcribed
        if onset_seq > said[1]:
            return onset
        if ended is not None and ended[0].utterance_id == onset.utterance_id:
            return onset if ended[1] > said[1] else None
        return None

    async def heard_onset(self, onset: VoiceStarted) -> None:
        """An onset found by this endpoint's own capture, in this process (the web gateway
        listens and plays in one): the replies of its conversation stop now, not after the
        onset's round trip through the stream. The same onset arriving later from the bus
        finds them stopped."""
        halted = [
            pb for pb in list(self.order.get(onset.conversation_id, ())) if self._halt(pb, onset)
        ]
        for pb in halted:
            try:
                await self._stopped(pb, onset)
            except Exception as exc:  # the bus's copy of the onset publishes the stop
                if not pb.finished:
                    pb.barged_in = False
                log.warning("barge-in left to the bus", extra={"error": repr(exc)})

    async def _barge_in(self, pb: Playback, v: VoiceStarted) -> None:
        if self._halt(pb, v):
            await self._stopped(pb, v)

    def _halt(self, pb: Playback, v: VoiceStarted) -> bool:
        """Silence `pb` if `v` stops it (at once, before anything is published)."""
        if not self.counts_as_barge_in(pb, v):
            return False
        pb.barged_in = True
        if pb.output is not None:
            pb.output.halt()  # what was heard up to the moment we learned of the user
            if pb.reference is not None:
                pb.reference.halted(time.time())
        # Unheard held audio goes with the playback: nothing of this generation plays.
        pb.pending.clear()
        return True

    async def _stopped(self, pb: Playback, v: VoiceStarted) -> None:
        """Tell the llm, the tts and the log that `v` stopped `pb` (halted by `_halt`)."""
        stop = Interrupt(
            # One per reply generation: two generations of a turn stopped by one onset each
            # record their own playback-done.
            event_id=derive_id(v.event_id, "interrupt", pb.utterance_id, pb.common["generation"]),
            producer=self.producer,
            reason="barge-in",
            by_utterance_id=v.utterance_id,
            **pb.turn,
        )
        await self.bus.publish(stop)
        await self._finish(pb, derive_id(stop.event_id, "playback-done"), interrupted=True)
        log.info("barge-in", extra={"utterance": pb.utterance_id, "by": v.utterance_id})

    async def _error(self, pb: Playback, code: str, message: str) -> None:
        await self.bus.publish(
            ControlError.of(pb.started_event, "speaker", code, message, producer=self.producer)
        )

    # -- an owner that died --------------------------------------------------------------

    async def _earlier_owner(self, started: TtsStarted) -> str:
        """How far an earlier owner of this reply got before it died: "done" (playback-done
        published), "playing" (playback-started published) or "" (nothing heard). This
        generation's only: another one of the turn (an answer the llm gave again) that was
        heard says nothing about this one."""
        for state, event_type in (("done", PlaybackDone.type), ("playing", PlaybackStarted.type)):
            last = await self.bus.last(started.endpoint, started.conversation_id, event_type)
            if (
                last is not None
                and last.utterance_id == started.utterance_id
                and getattr(last, "generation", "") == started.generation
            ):
                return state
        return ""

    async def _restarted(self, started: TtsStarted) -> None:
        message = (
            "the speaker stopped while this reply was playing; how much of it was heard is unknown"
        )
        await self.bus.publish(
            ControlError.of(
                started, "speaker", "speaker-restarted", message, producer=self.producer
            )
        )
