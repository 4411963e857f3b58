"""Several llm instances share the work like the stt: each turn is owned by one instance,
and an interrupt reaches the instance that generates it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats.js.errors

from schemas import Interrupt, ReplyDone, ReplyStarted, ReplyToken
from tests.conftest import wait_for
from tests.test_llm_support import Tap, transcript
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.procs import WorkerProcess

STORY = "Tell me a long story about a brave knight, a dragon and a castle."


def llm_process(settings: Settings, worker_id: str, tmp_path: Path) -> WorkerProcess:
    return WorkerProcess(
        "llm",
        settings,
        worker_id=worker_id,
        # One thread each: two instances on two cores.
        env={"LLM_MAX_TOKENS": "300", "LLM_THREADS": "1", "LLM_MEMORY_WAIT_S": "0"},
        log_file=tmp_path / f"{worker_id}.log",
    ).start()


async def wait_waiting(bus: Bus, procs: list[WorkerProcess], pulls: int) -> None:
    """Until `pulls` pull requests wait on the shared "llm" durable (both models loaded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 90
    while loop.time() < deadline:
        for p in procs:
            assert p.running, f"{p.worker_id} exited; see {p.log_file}"
        try:
            if (await bus.js.consumer_info(bus.stream, "llm")).num_waiting >= pulls:
                return
        except nats.js.errors.NotFoundError:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError("llm instances not ready")


async def test_two_llm_instances_share_turns_and_each_interrupt_reaches_its_owner(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    tap = await Tap().start(bus)
    procs = [llm_process(settings, f"llm-{i}", tmp_path) for i in (1, 2)]
    try:
        await wait_waiting(bus, procs, 2)
        # Two long replies at once, in two conversations: one instance each.
        stories = [transcript(STORY) for _ in range(2)]
        for t in stories:
            await bus.publish(t)
        await wait_for(
            lambda: all(len(tap.of(ReplyToken, t.utterance_id)) >= 3 for t in stories),
            timeout=60,
        )
        owners = {tap.of(ReplyStarted, t.utterance_id)[0].producer for t in stories}
        assert owners == {"llm-1", "llm-2"}
        for t in stories:
            await bus.publish(
                Interrupt(
                    endpoint=t.endpoint,
                    conversation_id=t.conversation_id,
                    utterance_id=t.utterance_id,
                    reason="barge-in",
                )
            )
        dones = [await tap.done(t.utterance_id, timeout=30) for t in stories]
        assert [d.finish_reason for d in dones] == ["interrupted", "interrupted"]
        assert all(d.tokens < 300 for d in dones)

        # Four short questions at once: each answered once, by one instance.
        questions = [transcript(f"What is {n} plus {n}?") for n in range(1, 5)]
        for t in questions:
            await bus.publish(t)
        answers = [await tap.done(t.utterance_id, timeout=90) for t in questions]
        assert all(a.finish_reason in ("stop", "length") and a.tokens > 0 for a in answers)
        for p in procs:
            assert p.running, f"{p.worker_id} exited; see {p.log_file}"
    finally:
        for p in procs:
            p.stop()
        await tap.stop()
    for t in [*stories, *questions]:
        started = tap.of(ReplyStarted, t.utterance_id)
        done = tap.of(ReplyDone, t.utterance_id)
        # One owner per turn: one start and one end, by the same instance, and every token
        # of the reply from it.
        assert len(started) == 1 and len(done) == 1, t.text
        assert {k.producer for k in tap.of(ReplyToken, t.utterance_id)} <= {started[0].producer}
        assert done[0].producer == started[0].producer
