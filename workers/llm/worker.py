"""The llm worker: final transcripts in; reply tokens, speakable sentences and a done marker out.

A turn starts with llm.reply-started (the tts claims the reply on it). Transcripts of a
conversation bound to go no further than the stt are left alone; a transcript older than
LLM_MAX_AGE_S ends its turn with control.error "stale".

Two consumers: "llm" takes stt.transcript and generates (one turn at a time); "llm-control"
takes control.interrupt, and stt.transcript again to notice a barge-in (a new utterance in a
conversation whose reply is still generating), and sets the turn's cancel flag, which the
backend checks before every token. Ids of everything emitted derive from the generation's
id: the transcript's event id for its first delivery. A redelivered transcript (its llm was
lost) discards the half-done generation as "abandoned" and is answered again under a new one,
as no backend promises to regenerate the same tokens.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
from opentelemetry.trace import Status, StatusCode

from schemas import (
    ControlError,
    Event,
    Interrupt,
    ReplyCommitted,
    ReplyDiscarded,
    ReplyDone,
    ReplySentence,
    ReplyStarted,
    ReplyToken,
    Transcript,
    VoiceStarted,
    derive_id,
    subject_filter,
)
from schemas.routing import LLM, LLM_CONTROL
from workers.llm.backends import Backend, BackendError, Generation, make_backend
from workers.llm.config import LlmSettings, get_llm_settings
from workers.llm.language import system_prompt_for
from workers.llm.memory import EventLogMemory, build_messages
from workers.llm.sentences import SentenceSplitter
from workers.runtime.bus import MSG_ID, Bus, Consumer, Delivery
from workers.runtime.config import Settings
from workers.runtime.service import TurnPriority, Worker
from workers.runtime.telemetry import tracer

log = logging.getLogger("voicebus.llm")


def turn_seed(utterance_id: str) -> int:
    """Sampling seed of a turn: the same utterance always samples the same way."""
    return uuid.uuid5(uuid.NAMESPACE_OID, f"llm-seed/{utterance_id}").int % (2**31)


@dataclass
class ActiveTurn:
    conversation_id: str
    utterance_id: str
    generation: str = ""
    """The id of the transcript this generation answers."""
    question: str = ""
    speculative: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str = ""
    redeliveries: list[Delivery] = field(default_factory=list)
    """Later deliveries of the transcript this answer runs for: settled with its own."""


def attempt_id(t: Transcript, delivery: int) -> str:
    """The generation id of the `delivery`-th delivery of `t` (the first is `t.event_id`)."""
    return t.event_id if delivery <= 1 else derive_id(t.event_id, "attempt", delivery)


def same_question(a: str, b: str) -> bool:
    """Whether two transcripts ask the same (case, spacing and final punctuation aside)."""

    def norm(s: str) -> str:
        return " ".join(s.lower().split()).rstrip(".?!,;: ")

    return norm(a) == norm(b)


class LlmWorker(Worker):
    name = "llm"

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        llm_settings: LlmSettings | None = None,
        backend: Backend | None = None,
    ) -> None:
        super().__init__(bus, settings)
        self.options = llm_settings or get_llm_settings()
        self.backend = backend or make_backend(self.options)
        self.memory = EventLogMemory(settings.db_url, self.options.memory_turns)
        self.active: dict[str, ActiveTurn] = {}
        """Generating turns by conversation id."""
        self._interrupted: collections.OrderedDict[str, str] = collections.OrderedDict()
        """Utterances interrupted before (or while) their turn ran: id -> reason."""
        self._memory_wait = self.options.memory_wait_s
        self._tracer = tracer("voicebus.llm")
        self._speculations: set[asyncio.Task[None]] = set()
        # LLM_PARALLEL > 1: turns run side by side (the backend batches them); a transcript
        # waits for a free slot, and the consumer fetches no more meanwhile (batch=1), so
        # the rest go to other instances.
        self._slots = asyncio.Semaphore(self.options.slots) if self.options.slots > 1 else None
        self._turn_tasks: set[asyncio.Task[None]] = set()
        self.turns = 0
        self.priority = TurnPriority(self.options.nice, always=self.options.nice_always)

    async def setup(self) -> None:
        if self.options.backend == "embedded":
            self.priority.start()
        t0 = time.perf_counter()
        print(f"llm: loading {self.backend.name} {self.backend.model} ...", file=sys.stderr)
        await self.backend.start()
        # The first turn must be as fast as the fifth: evaluate the system prompt real turns
        # start with (with the language line of the most likely language), so its prefix is
        # cached and the weights are paged in before the first question.
        system = system_prompt_for(self.options.system_prompt, "en", 1.0)
        await self.backend.warmup(
            [{"role": "system", "content": system}, {"role": "user", "content": "Hello."}]
        )
        print(f"llm: ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    def consumers(self) -> list[Consumer]:
        return [
            self.route_consumer(
                LLM,
                self.on_transcript,
                batch=1,  # a turn takes seconds: leave later transcripts to other instances
                ack_wait=self.options.ack_wait_s,
            ),
            self.route_consumer(
                LLM_CONTROL, self.on_control, per_instance=True, fetch_timeout=0.25
            ),
        ]

    async def aclose(self) -> None:
        for turn in self.active.values():
            turn.reason = "shutdown"
            turn.cancel.set()
        pending = self._speculations | self._turn_tasks
        if pending:  # they end at their next token and ack their transcripts
            await asyncio.wait(list(pending), timeout=5)
        await self.backend.aclose()
        self.memory.close()

    # -- control ----------------------------------------------------------------------

    async def on_control(self, event: Event, _delivery: Delivery) -> None:
        if isinstance(event, ReplyDiscarded):
            turn = self.active.get(event.conversation_id)
            if turn is not None and turn.generation == event.generation:
                if not turn.cancel.is_set():  # the first reason stands (e.g. "resumed")
                    turn.reason = "discarded"
                turn.cancel.set()
        elif isinstance(event, Interrupt):
            self._mark_interrupted(event.utterance_id, event.reason)
            turn = self.active.get(event.conversation_id)
            if turn is not None and turn.utterance_id == event.utterance_id:
                if not turn.cancel.is_set():  # the first reason stands
                    turn.reason = event.reason
                turn.cancel.set()
        elif isinstance(event, VoiceStarted) and event.resumes:
            # The user only paused: the turn goes on in this utterance, which will be
            # answered with the whole sentence. The cut turn's answer stops (or never starts).
            self._mark_interrupted(event.resumes, "resumed")
            turn = self.active.get(event.conversation_id)
            if turn is not None and turn.utterance_id == event.resumes:
                if not turn.cancel.is_set():
                    turn.reason = "resumed"
                turn.cancel.set()
            await self._discard_resumed(event)
        elif isinstance(event, Transcript) and event.text.strip():
            turn = self.active.get(event.conversation_id)
            if turn is not None and turn.utterance_id != event.utterance_id:
                # The user spoke again while the reply was generating: barge-in.
                if not turn.cancel.is_set():  # the first reason stands (e.g. "resumed")
                    self._mark_interrupted(turn.utterance_id, "barge-in")
                    turn.reason = "barge-in"
                turn.cancel.set()

    async def _discard_resumed(self, onset: VoiceStarted) -> None:
        """The cut turn's answer is not the answer, even one generated in full before the
        user went on (a short reply is done in a few hundred ms): discard its generation.
        Its playback, if it had started, was stopped by the same onset (barge-in). Every
        instance gets the onset; the discard's id is derived, so one is kept."""
        started = await self.bus.last(onset.endpoint, onset.conversation_id, ReplyStarted.type)
        if not isinstance(started, ReplyStarted) or started.utterance_id != onset.resumes:
            return
        await self.bus.publish(
            self._discard(onset, onset.resumes, started.generation, "resumed", "discarded")
        )

    def _discard(
        self, of: Event, utterance_id: str, generation: str, reason: str, label: str
    ) -> ReplyDiscarded:
        """A discard of `generation` (of `of`'s conversation), its id derived from the
        generation and `label`, so every instance that publishes it publishes one event."""
        return ReplyDiscarded(
            event_id=derive_id(generation, label),
            endpoint=of.endpoint,
            conversation_id=of.conversation_id,
            utterance_id=utterance_id,
            producer=self.worker_id,
            generation=generation,
            reason=reason,  # type: ignore[arg-type]
        )

    def _mark_interrupted(self, utterance_id: str, reason: str) -> None:
        self._interrupted[utterance_id] = reason
        while len(self._interrupted) > 10_000:
            self._interrupted.popitem(last=False)

    # -- turns ------------------------------------------------------------------------

    async def on_transcript(self, event: Event, delivery: Delivery) -> None:
        assert isinstance(event, Transcript)
        if not event.text.strip():
            return  # noise the recogniser heard as nothing: no turn
        arrived = time.perf_counter()
        if not await self.bindings.goes_to(event.endpoint, event.conversation_id, "llm"):
            return  # a transcription-only conversation: nothing past the stt
        age_s = time.time() - event.ts
        if age_s > self.options.max_age_s:
            await self._stale(event, age_s)
            return
        if await self._settle_speculation(event):
            return  # the speculative answer already running is this turn's answer
        if self._still_answering(event, delivery):
            return
        attempt = await self._generation(event, delivery)
        if attempt is None:
            return  # answered or decided before: only the ack was lost
        generation, committed = attempt
        turn = ActiveTurn(
            event.conversation_id,
            event.utterance_id,
            generation=generation,
            question=event.text,
            speculative=event.speculative and not committed,
        )
        if event.utterance_id in self._interrupted:
            turn.reason = self._interrupted[event.utterance_id]
            turn.cancel.set()  # interrupted before its turn came
        previous = self.active.get(event.conversation_id)
        if previous is not None:
            previous.cancel.set()
        self.active[event.conversation_id] = turn
        if event.speculative:
            # Not awaited: the final transcript must get through this consumer while the
            # speculative answer runs; the transcript is acked when its answer ends.
            delivery.defer()
            task = asyncio.create_task(self._run(event, turn, arrived, delivery))
            self._speculations.add(task)
            task.add_done_callback(self._speculations.discard)
            return
        if self._slots is None:
            await self._run(event, turn, arrived, delivery)
            return
        await self._slots.acquire()
        delivery.defer()  # acked when its turn ends
        task = asyncio.create_task(self._run_in_slot(event, turn, arrived, delivery))
        self._turn_tasks.add(task)
        task.add_done_callback(self._turn_tasks.discard)

    async def _run_in_slot(
        self, event: Transcript, turn: ActiveTurn, arrived: float, delivery: Delivery
    ) -> None:
        assert self._slots is not None
        try:
            await self._run(event, turn, arrived, delivery)
        except Exception:
            # Not the consumer's task: the transcript is redelivered after the ack wait.
            log.exception("llm turn failed", extra={"utterance": event.utterance_id})
        finally:
            self._slots.release()

    async def _run(
        self, event: Transcript, turn: ActiveTurn, arrived: float, delivery: Delivery
    ) -> None:
        # A long generation tells JetStream it is still working on the transcript.
        progress = asyncio.create_task(self._keep_alive(turn, delivery))
        ended = False
        try:
            await self._turn(event, turn, arrived)
            ended = True
        finally:
            progress.cancel()
            if self.active.get(event.conversation_id) is turn:
                del self.active[event.conversation_id]
            # A turn that did not end (its publishes failed) comes back, here or to another
            # instance; its events' ids are the same, so nothing doubles.
            for d in [delivery, *turn.redeliveries]:
                if d.deferred:
                    with contextlib.suppress(nats.errors.Error):
                        await (d.ack() if ended else d.nak(1.0))

    def _still_answering(self, t: Transcript, d: Delivery) -> bool:
        """Whether `t` came again while this process is still answering it: its progress
        reports or its ack did not reach the server in time (a NATS failover), the llm was
        not lost. The answer goes on, and settles this delivery with its own; abandoning it
        would cut off a reply being heard and answer the turn twice."""
        local = self.active.get(t.conversation_id)
        if d.num_delivered <= 1 or local is None or local.cancel.is_set():
            return False
        earlier = {attempt_id(t, n) for n in range(1, d.num_delivered)}
        if local.utterance_id != t.utterance_id or local.generation not in earlier:
            return False
        d.defer()
        local.redeliveries.append(d)
        log.info(
            "transcript redelivered while its answer runs here; kept",
            extra={"utterance": t.utterance_id, "generation": local.generation},
        )
        return True

    # -- speculation --------------------------------------------------------------------

    async def _settle_speculation(self, t: Transcript) -> bool:
        """A speculative answer of this utterance may be running (here or in another
        instance). If `t` asks the same, it stands (a final transcript commits it) and True
        is returned; otherwise it is discarded and `t` gets an answer of its own."""
        spec = await self._speculation_of(t)
        if spec is None:
            return False
        generation, question = spec
        if self._interrupted.get(t.utterance_id) == "resumed":
            # The user went on speaking: this speculation answers half a sentence and is
            # never heard; the utterance that resumed the turn is answered instead.
            await self._decide(t, generation, commit=False, reason="resumed")
            return True
        if same_question(question, t.text):
            if not t.speculative:
                await self._decide(t, generation, commit=True)
            return True
        await self._decide(t, generation, commit=False)
        return False

    async def _speculation_of(self, t: Transcript) -> tuple[str, str] | None:
        """(generation, question) of an undecided speculative answer of `t`'s utterance."""
        local = self.active.get(t.conversation_id)
        if local is not None and local.utterance_id == t.utterance_id and local.speculative:
            if local.generation != t.event_id and local.reason != "discarded":
                return local.generation, local.question
        started = await self.bus.last(t.endpoint, t.conversation_id, ReplyStarted.type)
        if not (
            isinstance(started, ReplyStarted)
            and started.speculative
            and started.utterance_id == t.utterance_id
            and started.generation != t.event_id
        ):
            return None
        for decided_type in (ReplyCommitted.type, ReplyDiscarded.type):
            decided = await self.bus.last(t.endpoint, t.conversation_id, decided_type)
            if decided is not None and decided.generation == started.generation:  # type: ignore[attr-defined]
                return None
        return started.generation, started.question

    async def _decide(
        self, t: Transcript, generation: str, *, commit: bool, reason: str = ""
    ) -> None:
        common = {
            "endpoint": t.endpoint,
            "conversation_id": t.conversation_id,
            "utterance_id": t.utterance_id,
            "producer": self.worker_id,
            "generation": generation,
        }
        if commit:
            event: Event = ReplyCommitted(
                event_id=derive_id(generation, "committed"),
                transcript_event_id=t.event_id,
                **common,
            )
        else:
            event = ReplyDiscarded(
                event_id=derive_id(generation, "discarded"),
                reason=reason or ("superseded" if t.speculative else "changed"),  # type: ignore[arg-type]
                **common,
            )
            local = self.active.get(t.conversation_id)
            if local is not None and local.generation == generation and not local.cancel.is_set():
                local.reason = "discarded"
                local.cancel.set()
        await self.bus.publish(event)
        log.info(
            "speculation " + ("committed" if commit else "discarded"),
            extra={"utterance": t.utterance_id, "generation": generation},
        )

    async def _generation(self, t: Transcript, d: Delivery) -> tuple[str, bool] | None:
        """(generation, committed) this delivery of `t` answers under; None: no answer is due.

        The first delivery answers under the transcript's id. A redelivery means the llm that
        had it was lost, maybe half-way: a model does not regenerate the same tokens (sampling,
        a GPU, another Ollama), so reusing the ids would stitch the old head to a new tail. The
        half-done generation is discarded ("abandoned") and the turn answered again under a
        new one; memory and replay follow the last generation not discarded.

        A lost speculative answer that the final transcript had already committed is answered
        again as committed: that final was acknowledged, nothing would commit the new one, and
        the speaker would hold it unheard. One the end-pointer had discarded needs no answer,
        nor does a transcript whose turn another live generation answers."""
        if d.num_delivered <= 1:
            return t.event_id, False
        earlier = [t.event_id] + [attempt_id(t, n) for n in range(2, d.num_delivered)]
        done = await self.bus.last(t.endpoint, t.conversation_id, ReplyDone.type)
        if isinstance(done, ReplyDone) and done.generation in earlier:
            return None
        committed = False
        started = await self.bus.last(t.endpoint, t.conversation_id, ReplyStarted.type)
        if (
            isinstance(started, ReplyStarted)
            and started.utterance_id == t.utterance_id
            and started.generation not in earlier
            and not await self._decided(t, started.generation, ReplyDiscarded)
        ):
            # The turn is answered under another transcript (the final's, or the speculation
            # this final committed): answering this one again would cut that answer off.
            return None
        if isinstance(started, ReplyStarted) and started.generation in earlier:
            if not started.speculative:
                committed = True  # answered as committed from its start
            elif await self._decided(t, started.generation, ReplyCommitted):
                committed = True
            elif await self._decided(t, started.generation, ReplyDiscarded, "abandoned"):
                return None  # superseded or changed: the turn has another answer
            await self.bus.publish(
                self._discard(t, t.utterance_id, started.generation, "abandoned", "abandoned")
            )
            log.warning(
                "reply abandoned by a lost llm; answering again",
                extra={"utterance": t.utterance_id, "generation": started.generation},
            )
        return attempt_id(t, d.num_delivered), committed

    async def _decided(
        self, t: Transcript, generation: str, kind: type[Event], unless_reason: str = ""
    ) -> bool:
        """Whether the last `kind` decision of `t`'s conversation is about `generation`
        (a discard for `unless_reason` aside)."""
        decided = await self.bus.last(t.endpoint, t.conversation_id, kind.type)
        return (
            decided is not None
            and getattr(decided, "generation", "") == generation
            and (not unless_reason or getattr(decided, "reason", "") != unless_reason)
        )

    async def _stale(self, t: Transcript, age_s: float) -> None:
        """A transcript this old is not a question someone is waiting for (it sat in the
        stream while no llm ran): the turn ends with an error, not a late spoken answer."""
        log.warning("stale transcript", extra={"utterance": t.utterance_id, "age_s": age_s})
        message = (
            f"the transcript is {age_s:.0f} s old (LLM_MAX_AGE_S={self.options.max_age_s:.0f}); "
            "not answered"
        )
        await self.bus.publish(ControlError.of(t, "llm", "stale", message, producer=self.worker_id))

    async def _keep_alive(self, turn: ActiveTurn, delivery: Delivery) -> None:
        while True:
            await asyncio.sleep(self.options.ack_wait_s / 3)
            for d in [delivery, *turn.redeliveries]:
                # One report lost in a failover must not end the reports of the others.
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await d.msg.in_progress()

    async def _turn(self, t: Transcript, turn: ActiveTurn, arrived: float) -> None:
        reply = ReplyWriter(self.bus, t, self.worker_id, turn.generation, turn.speculative)
        self.turns += 1
        # Full priority while the user waits for the first sentence (closed once it is out).
        first = contextlib.ExitStack()
        first.enter_context(self.priority.urgent())
        with first, self._tracer.start_as_current_span("llm.generate") as span:
            # First, so the tts claims the reply while the prompt is built and the model
            # thinks (and its spans join this one).
            await reply.started(self.backend.model)
            span.set_attribute("llm.speculative", turn.speculative)
            span.set_attribute("llm.generation", turn.generation)
            messages, kept = await self._prompt(t)
            span.set_attribute("llm.backend", self.backend.name)
            span.set_attribute("llm.model", self.backend.model)
            span.set_attribute("llm.history_turns", kept)
            span.set_attribute("voice.conversation_id", t.conversation_id)
            span.set_attribute("voice.utterance_id", t.utterance_id)
            done = await self._generate(reply, turn, messages, arrived, first)
            span.set_attribute("llm.prompt_tokens", done.prompt_tokens)
            span.set_attribute("llm.completion_tokens", done.tokens)
            span.set_attribute("llm.first_token_ms", done.first_token_ms)
            span.set_attribute("llm.tokens_per_s", done.tokens_per_s)
            span.set_attribute("llm.finish_reason", done.finish_reason)
            if turn.reason and done.interrupted:
                span.set_attribute("llm.interrupt_reason", turn.reason)
            if done.finish_reason == "error":
                span.set_status(Status(StatusCode.ERROR, "backend failed"))
        log.info(
            "reply done",
            extra={
                "utterance": t.utterance_id,
                "finish": done.finish_reason,
                "tokens": done.tokens,
                "first_token_ms": round(done.first_token_ms, 1),
            },
        )

    async def _prompt(self, t: Transcript) -> tuple[list[dict[str, str]], int]:
        await self._wait_for_log(t)
        turns = await self.memory.previous_turns(t.conversation_id, t.utterance_id)
        budget = self.options.context_tokens - self.options.max_tokens
        # Reply in the language the user spoke (Whisper's), not the one the model drifts to.
        system = system_prompt_for(self.options.system_prompt, t.language, t.language_probability)
        return build_messages(system, turns, t.text.strip(), budget, self.backend.count_tokens)

    async def _wait_for_log(self, t: Transcript) -> None:
        """Wait until the conversation's latest reply and playback outcome are in the log,
        so a quick follow-up question does not miss the turn before it."""
        ids = []
        for event_type in (ReplyDone.type, "speaker.playback-done"):
            subject = subject_filter(t.endpoint, t.conversation_id, event_type)
            try:
                msg = await self.bus.js.get_last_msg(self.bus.stream, subject)
            except (nats.js.errors.NotFoundError, nats.errors.Error, TimeoutError):
                continue
            headers = msg.headers or {}
            if headers.get(MSG_ID):
                ids.append(headers[MSG_ID])
        if not ids or self._memory_wait <= 0:
            return
        if await self.memory.wait_recorded(ids, self._memory_wait):
            self._memory_wait = self.options.memory_wait_s
        else:
            log.warning(
                "the previous reply is not in the event log after %.1fs (is the recorder "
                "running?); answering with the history it has",
                self._memory_wait,
            )
            self._memory_wait = min(0.25, self.options.memory_wait_s)

    async def _generate(
        self,
        reply: ReplyWriter,
        turn: ActiveTurn,
        messages: list[dict[str, str]],
        arrived: float,
        first: contextlib.ExitStack,
    ) -> ReplyDone:
        gen = Generation()
        first.callback(gen.first_sentence.set)
        splitter = SentenceSplitter()
        error: BackendError | None = None
        if not turn.cancel.is_set():
            try:
                stream = self.backend.stream(
                    messages, seed=turn_seed(turn.utterance_id), cancel=turn.cancel, gen=gen
                )
                async for piece in stream:
                    if turn.cancel.is_set():
                        break
                    await reply.token(piece)
                    await reply.sentences(splitter.push(piece))
                    if reply.sentence_count:
                        first.close()  # the tts has what the user waits for: yield to it
            except BackendError as exc:
                error = exc
            except Exception as exc:
                # Whatever the backend raises (a bug, a library's own error) ends this turn
                # out loud; the worker goes on with the next one.
                log.exception("llm backend raised %s", exc.__class__.__name__)
                error = BackendError(f"{self.backend.name} failed: {exc.__class__.__name__}: {exc}")
        finish = gen.finish_reason
        if turn.cancel.is_set():
            # What was not yet a sentence is never spoken; a discarded speculation says so.
            finish = turn.reason if turn.reason in ("discarded", "resumed") else "interrupted"
        elif error is not None:
            finish = "error"
            log.warning("llm turn failed: %s", error)
            await reply.error(error)
        else:
            await reply.sentences(splitter.flush())
        return await reply.done(finish, self.backend.model, gen.prompt_tokens, arrived)


class ReplyWriter:
    """Publishes one generation's events, with ids derived from the generation's id (the
    transcript's id for its first delivery: a repeat of the same generation republishes the
    same ids, which JetStream and the log drop)."""

    def __init__(
        self,
        bus: Bus,
        t: Transcript,
        producer: str,
        generation: str = "",
        speculative: bool | None = None,
    ) -> None:
        self.bus = bus
        self.t = t
        self.speculative = t.speculative if speculative is None else speculative
        """Held unheard until llm.reply-committed (a speculation not yet decided)."""
        self.generation = generation or t.event_id
        self.turn = {
            "endpoint": t.endpoint,
            "conversation_id": t.conversation_id,
            "utterance_id": t.utterance_id,
            "producer": producer,
        }
        self.common = {**self.turn, "generation": self.generation}
        self.parts: list[str] = []
        self.sentence_count = 0
        self.first_token_at = 0.0

    async def started(self, model: str) -> None:
        await self.bus.publish(
            ReplyStarted(
                event_id=derive_id(self.generation, "reply-started"),
                language=self.t.language[:16],
                model=model[:256],
                question=self.t.text[:10_000],
                speculative=self.speculative,
                **self.common,
            )
        )

    async def token(self, piece: str) -> None:
        i = len(self.parts)
        if i == 0:
            self.first_token_at = time.perf_counter()
        self.parts.append(piece)
        await self.bus.publish_nowait(
            ReplyToken(
                event_id=derive_id(self.generation, "token", i),
                seq=i,
                text=piece,
                index=i,
                **self.common,
            )
        )

    async def sentences(self, pieces: list[str]) -> None:
        for piece in pieces:
            n = self.sentence_count
            await self.bus.publish_nowait(
                ReplySentence(
                    event_id=derive_id(self.generation, "sentence", n),
                    seq=n,
                    text=piece,
                    index=n,
                    **self.common,
                )
            )
            self.sentence_count += 1

    async def error(self, error: BackendError) -> None:
        await self.bus.publish_nowait(
            ControlError.of(
                self.t,
                "llm",
                error.code,
                str(error),
                producer=self.turn["producer"],
                retryable=error.retryable,
            )
        )

    async def done(self, finish: str, model: str, prompt_tokens: int, arrived: float) -> ReplyDone:
        ended = time.perf_counter()
        first = self.first_token_at
        streaming_s = ended - first if first else 0.0
        n = len(self.parts)
        done = ReplyDone(
            event_id=derive_id(self.generation, "done"),
            text="".join(self.parts),
            sentences=self.sentence_count,
            tokens=n,
            finish_reason=finish,  # type: ignore[arg-type]
            model=model,
            prompt_tokens=prompt_tokens,
            first_token_ms=(first - arrived) * 1000 if first else 0.0,
            tokens_per_s=(n - 1) / streaming_s if n > 1 and streaming_s else 0.0,
            **self.common,
        )
        await self.bus.flush_publishes()
        await self.bus.publish(done)
        return done
