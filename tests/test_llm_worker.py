"""The llm worker on a real nats-server with the embedded SmolLM2 model and the real recorder."""

from __future__ import annotations

import time
from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from schemas import (
    Interrupt,
    ReplyDiscarded,
    ReplySentence,
    ReplyToken,
    derive_id,
)
from tests.conftest import wait_for
from tests.test_llm_support import Tap, llm_settings, running, transcript
from workers.llm.backends import EmbeddedBackend
from workers.llm.memory import EventLogMemory, Turn, build_messages
from workers.llm.sentences import speakable
from workers.llm.worker import LlmWorker
from workers.recorder.worker import Recorder
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.procs import WorkerProcess
from workers.runtime.telemetry import add_exporter

STORY = "Tell me a long story about a brave knight, a dragon and a castle."


def worker(bus: Bus, settings: Settings, **kw: object) -> LlmWorker:
    options = llm_settings(**kw)
    backend = EmbeddedBackend(max_tokens=options.max_tokens)
    return LlmWorker(bus, settings, options, backend)


async def test_reply_streams_tokens_then_sentences_then_done(bus: Bus, settings: Settings) -> None:
    tap = await Tap().start(bus)
    t = transcript("What is the capital of France?")
    async with running(worker(bus, settings)):
        sent = time.time()
        await bus.publish(t)
        done = await tap.done(t.utterance_id)
    tokens = tap.of(ReplyToken, t.utterance_id)
    sentences = tap.of(ReplySentence, t.utterance_id)
    assert done.finish_reason in ("stop", "length") and done.tokens == len(tokens) > 0
    assert [k.index for k in tokens] == [k.seq for k in tokens] == list(range(len(tokens)))
    assert "".join(k.text for k in tokens) == done.text
    assert [s.index for s in sentences] == list(range(done.sentences)) and sentences
    assert " ".join(s.text for s in sentences) == speakable(done.text)
    # Ids derive from the transcript: a redelivered transcript republishes the same ids.
    assert tokens[0].event_id == derive_id(t.event_id, "token", 0)
    assert sentences[0].event_id == derive_id(t.event_id, "sentence", 0)
    assert done.event_id == derive_id(t.event_id, "done")
    # The worker's first-token time is a wait the tap saw: from publishing the transcript to
    # the first token arriving (no wall-clock bound: the suite must pass beside a CPU hog).
    seen_ms = (tap.arrival(tokens[0]) - sent) * 1000
    assert 0 < done.first_token_ms <= seen_ms + 5
    assert done.prompt_tokens > 10 and done.tokens_per_s > 0
    # The first sentence is out before the reply is done (TTS can start early).
    first_sentence_at = tap.arrived[tap.events.index(sentences[0])]
    assert first_sentence_at <= tap.arrived[tap.events.index(done)]


async def test_interrupt_stops_generation_within_one_token(bus: Bus, settings: Settings) -> None:
    tap = await Tap().start(bus)
    t = transcript(STORY)
    async with running(worker(bus, settings, max_tokens=400)) as w:
        await bus.publish(t)
        await wait_for(lambda: len(tap.of(ReplyToken, t.utterance_id)) >= 5, timeout=20)
        turn = w.active[t.conversation_id]  # type: ignore[attr-defined]
        await bus.publish(
            Interrupt(
                endpoint="device", conversation_id=t.conversation_id, utterance_id=t.utterance_id
            )
        )
        await wait_for(turn.cancel.is_set, timeout=5)
        published_when_cancelled = len(tap.of(ReplyToken, t.utterance_id))
        done = await tap.done(t.utterance_id)
    assert done.finish_reason == "interrupted" and done.interrupted
    # At most the token already in flight when the flag was set is published after it.
    assert done.tokens <= published_when_cancelled + 1 < 400
    assert len(tap.of(ReplyToken, t.utterance_id)) == done.tokens
    assert len(tap.of(ReplySentence, t.utterance_id)) == done.sentences


async def test_interrupt_that_arrives_before_the_turn_cancels_it(
    bus: Bus, settings: Settings
) -> None:
    tap = await Tap().start(bus)
    t = transcript(STORY)
    async with running(worker(bus, settings)) as w:
        await bus.publish(
            Interrupt(
                endpoint="device", conversation_id=t.conversation_id, utterance_id=t.utterance_id
            )
        )
        # Not a fixed sleep: the transcript goes out once the interrupt was taken in.
        await wait_for(lambda: t.utterance_id in w._interrupted, timeout=20)
        await bus.publish(t)
        done = await tap.done(t.utterance_id)
    assert done.finish_reason == "interrupted" and done.tokens == 0


async def test_new_utterance_in_the_conversation_barges_in(bus: Bus, settings: Settings) -> None:
    tap = await Tap().start(bus)
    first = transcript(STORY)
    second = transcript("Stop. What is two plus two?", first.conversation_id)
    async with running(worker(bus, settings, max_tokens=400)):
        await bus.publish(first)
        await wait_for(lambda: tap.of(ReplyToken, first.utterance_id), timeout=20)
        await bus.publish(second)
        done_first = await tap.done(first.utterance_id)
        done_second = await tap.done(second.utterance_id)
    assert done_first.finish_reason == "interrupted" and done_first.tokens < 400
    assert done_second.finish_reason in ("stop", "length") and done_second.tokens > 0


async def test_generate_span_reports_model_prompt_and_speed(bus: Bus, settings: Settings) -> None:
    exporter = InMemorySpanExporter()
    add_exporter(exporter)
    tap = await Tap().start(bus)
    t = transcript("Say hello.")
    async with running(worker(bus, settings)):
        await bus.publish(t)
        done = await tap.done(t.utterance_id)
    spans = [s for s in exporter.get_finished_spans() if s.name == "llm.generate"]
    (span,) = [s for s in spans if s.attributes["voice.utterance_id"] == t.utterance_id]
    a = span.attributes
    assert a["llm.model"] == "SmolLM2-135M-Instruct.Q4_1" and a["llm.backend"] == "embedded"
    assert a["llm.prompt_tokens"] == done.prompt_tokens > 0
    assert a["llm.first_token_ms"] == done.first_token_ms > 0
    assert a["llm.tokens_per_s"] == done.tokens_per_s
    assert a["llm.completion_tokens"] == done.tokens


def llm_process(settings: Settings, tmp_path: Path, **env: str) -> WorkerProcess:
    return WorkerProcess(
        "llm",
        settings,
        env={"LLM_MAX_TOKENS": "48", "LLM_THREADS": "1", **env},
        log_file=tmp_path / "llm.log",
    )


async def test_restarted_worker_continues_the_conversation_exactly(
    bus: Bus, settings: Settings
) -> None:
    tap = await Tap().start(bus)
    first = transcript("My favourite colour is green.")
    second = transcript("What is my favourite colour?", first.conversation_id)
    async with running(Recorder(bus, settings)):
        async with running(worker(bus, settings)):
            await bus.publish(first)
            done_first = await tap.done(first.utterance_id)
        # A new worker (new model instance, nothing carried over) takes the next turn.
        async with running(worker(bus, settings)) as w:
            await bus.publish(second)
            done_second = await tap.done(second.utterance_id)
            backend = w.backend  # type: ignore[attr-defined]
            remembered = Turn(first.utterance_id, first.text, speakable(done_first.text))
            messages, kept = build_messages(
                llm_settings().system_prompt, [remembered], second.text, 4096, backend.count_tokens
            )
            assert kept == 1
            assert len(backend.prompt_tokens(messages)[0]) == done_second.prompt_tokens
    memory = EventLogMemory(settings.db_url)
    turns = await memory.previous_turns(second.conversation_id, second.utterance_id)
    memory.close()
    assert turns == [remembered]


async def test_kill_llm_mid_reply_replays_the_same_reply(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    tap = await Tap().start(bus)
    t = transcript(STORY)
    # LLM_NICE=0: beside a CPU hog (ops/stress.sh) a niced llm is starved for minutes, and
    # what this test checks is the replay, not the priority; nor the staleness rule, which
    # a loaded machine's slow restart (10 s to load and warm) can reach.
    proc = llm_process(
        settings,
        tmp_path,
        LLM_MAX_TOKENS="120",
        LLM_ACK_WAIT_S="1",
        LLM_NICE="0",
        LLM_MAX_AGE_S="300",
    ).start()
    try:
        await proc.wait_consumer(bus)
        await bus.publish(t)
        await wait_for(lambda: len(tap.of(ReplyToken, t.utterance_id)) >= 10, timeout=90)
        proc.kill()
        before = {k.index: k.text for k in tap.of(ReplyToken, t.utterance_id)}
        proc.start()
        done = await tap.done(t.utterance_id, timeout=90)
    finally:
        proc.stop()
    assert done.finish_reason in ("stop", "length")
    # Answered again under a new generation, the cut one discarded as abandoned.
    assert done.generation != t.event_id
    (abandoned,) = tap.of(ReplyDiscarded, t.utterance_id)
    assert (abandoned.generation, abandoned.reason) == (t.event_id, "abandoned")
    # The replay samples with the same seed: the tokens stored before the kill (first
    # writer wins on equal ids) are the same as those of the finished reply.
    assert "".join(before[i] for i in sorted(before)) == done.text[: sum(map(len, before.values()))]
    assert len(before) < done.tokens
