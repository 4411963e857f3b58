"""An llm killed mid-reply: the turn is answered again under a new generation, the half-done
one is discarded as abandoned, and what is kept (reply-done, the turn row, the memory) is one
generation's words, never the old head stitched to a new tail.

The llm runs as a real process against tests.ollama_faults, whose words differ per request
(r1w0 ..., r2w0 ...), as a sampled model's would; the first request stalls after 3 words,
so the kill lands mid-reply."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ops.chaos import quiescent
from schemas import ReplyCommitted, ReplyDiscarded, ReplyDone, ReplyStarted, ReplyToken, new_id
from tests.conftest import wait_for
from tests.ollama_faults import Fault, FaultyOllama
from tests.test_llm_support import Tap, transcript
from tests.test_recorder import recorder
from workers.llm.memory import EventLogMemory
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog
from workers.runtime.procs import WorkerProcess


def faulty_llm(settings: Settings, tmp_path: Path, server: FaultyOllama) -> WorkerProcess:
    """A real llm process on `server`, quick to redeliver (2 s ack wait)."""
    env = {
        "LLM_BACKEND": "ollama",
        "OLLAMA_HOST": server.url,
        "LLM_MODEL": server.name,
        "LLM_ACK_WAIT_S": "2",
        "LLM_MEMORY_WAIT_S": "0.5",
        "LLM_NICE": "0",
        "LLM_OLLAMA_STALL_TIMEOUT_S": "120",  # only the kill may end a stalled reply
    }
    return WorkerProcess("llm", settings, env=env, log_file=tmp_path / "llm.log")


async def test_a_reply_cut_by_a_dead_llm_is_answered_again_under_a_new_generation(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    server = await FaultyOllama([Fault(3, "stall"), Fault(6, "done")]).start()
    llm = faulty_llm(settings, tmp_path, server)
    rec = recorder(settings, tmp_path)
    tap = await Tap().start(bus)
    t = transcript("Tell me something.")
    uid = t.utterance_id
    try:
        rec.start()
        llm.start()
        await llm.wait_consumer(bus)
        await rec.wait_consumer(bus)
        await bus.publish(t)
        await wait_for(lambda: len(tap.of(ReplyToken, uid)) == 3, timeout=30)
        llm.kill()  # stalled after 3 words: the reply is half-done
        llm.start()
        done: ReplyDone = await tap.done(uid, timeout=60)
        log = EventLog(settings.db_url, migrate=False)
        assert await log.wait_recorded([done.event_id], timeout=30)
    finally:
        llm.stop()
        rec.stop()
        await server.stop()
    first, second = (s.generation for s in tap.of(ReplyStarted, uid))
    assert first == t.event_id and second != first
    (discarded,) = tap.of(ReplyDiscarded, uid)
    assert (discarded.generation, discarded.reason) == (first, "abandoned")
    tokens = sorted(
        (e for e in tap.of(ReplyToken, uid) if e.generation == second), key=lambda e: e.index
    )
    assert [e.index for e in tokens] == list(range(6))
    # What was said under the kept generation is exactly what reply-done says.
    assert done.generation == second
    assert done.text == "".join(e.text for e in tokens) == " r2w0 r2w1 r2w2 r2w3. r2w4 r2w5"
    row = log.turn(uid)
    assert (row.generation, row.reply_text, row.speculation) == (second, done.text, "")
    memory = EventLogMemory(settings.db_url)
    (turn,) = await memory.previous_turns(t.conversation_id, new_id())
    assert "r2w0" in turn.assistant_text and "r1w" not in turn.assistant_text
    memory.close()
    log.close()


async def test_a_committed_speculation_cut_by_a_dead_llm_is_answered_again_as_committed(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    """The final transcript committed the speculative answer (and was acknowledged), then the
    llm died: the answer given again must be heard, so it starts committed; a speculative one
    nobody commits would be held unheard by the speaker and the turn never end."""
    server = await FaultyOllama([Fault(3, "stall"), Fault(6, "done")]).start()
    llm = faulty_llm(settings, tmp_path, server)
    tap = await Tap().start(bus)
    final = transcript("Tell me something.")
    spec = final.model_copy(update={"event_id": new_id(), "speculative": True})
    uid = final.utterance_id
    try:
        llm.start()
        await llm.wait_consumer(bus)
        await bus.publish(spec)
        await wait_for(lambda: len(tap.of(ReplyToken, uid)) == 3, timeout=30)
        await bus.publish(final)
        await wait_for(lambda: tap.of(ReplyCommitted, uid), timeout=30)
        llm.kill()
        llm.start()
        done: ReplyDone = await tap.done(uid, timeout=60)
    finally:
        llm.stop()
        await server.stop()
    first, second = tap.of(ReplyStarted, uid)
    assert (first.generation, first.speculative) == (spec.event_id, True)
    assert second.generation != first.generation and not second.speculative
    (committed,) = tap.of(ReplyCommitted, uid)
    assert committed.generation == first.generation
    (discarded,) = tap.of(ReplyDiscarded, uid)
    assert (discarded.generation, discarded.reason) == (first.generation, "abandoned")
    assert done.generation == second.generation and "r2w0" in done.text


async def test_a_redelivered_speculation_does_not_cut_off_the_final_answer(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    """The final transcript changed the words (the speculation was discarded) and its answer
    was half-way when the llm died: both transcripts come back. The final is answered once
    more; the speculation needs no answer, and answering it would cancel the final's."""
    server = await FaultyOllama([Fault(3, "stall"), Fault(3, "stall"), Fault(6, "done")]).start()
    llm = faulty_llm(settings, tmp_path, server)
    tap = await Tap().start(bus)
    final = transcript("Tell me something about cats.")
    spec = final.model_copy(
        update={"event_id": new_id(), "speculative": True, "text": "Tell me something."}
    )
    uid = final.utterance_id
    try:
        llm.start()
        await llm.wait_consumer(bus)
        await bus.publish(spec)
        await wait_for(lambda: len(tap.of(ReplyToken, uid)) == 3, timeout=30)
        await bus.publish(final)
        await wait_for(lambda: len(tap.of(ReplyToken, uid)) == 6, timeout=30)
        llm.kill()
        llm.start()
        # The discarded speculation may end (finish "discarded") before the kill or not,
        # as the machine's load decides: its reply-done is not the turn's answer.
        answers = await wait_for(
            lambda: [e for e in tap.of(ReplyDone, uid) if e.generation != spec.event_id],
            timeout=60,
        )
        done: ReplyDone = answers[0]
        # Both transcripts taken and acknowledged: a re-answer of either would be on the bus.
        await quiescent(bus, timeout=30)
    finally:
        llm.stop()
        await server.stop()
    generations = [e.generation for e in tap.of(ReplyStarted, uid)]
    assert generations[:2] == [spec.event_id, final.event_id]
    assert len(generations) == 3, generations  # the final's, answered again; nothing else
    assert done.generation == generations[2] and "r3w0" in done.text
    assert [e for e in tap.of(ReplyDone, uid) if e.generation != spec.event_id] == [done]
    assert all(e.finish_reason == "discarded" for e in tap.of(ReplyDone, uid) if e is not done)


async def test_a_transcript_redelivered_while_its_answer_runs_here_is_not_answered_twice(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    """The llm froze (stopped, or its progress reports lost in a NATS failover) past the ack
    wait, so JetStream gave the transcript to it again while its answer was still running (a
    speculation the final committed: it runs beside the consumer). That llm was not lost:
    the answer goes on and nothing is abandoned or answered twice."""
    import os
    import signal

    server = await FaultyOllama([Fault(12, "done")]).start()
    server.delay_s = 0.25  # a 3 s reply
    llm = faulty_llm(settings, tmp_path, server)
    tap = await Tap().start(bus)
    final = transcript("Tell me something long.")
    t = final.model_copy(update={"event_id": new_id(), "speculative": True})
    uid = t.utterance_id
    try:
        llm.start()
        await llm.wait_consumer(bus)
        await bus.publish(t)
        await wait_for(lambda: len(tap.of(ReplyToken, uid)) == 1, timeout=30)
        await bus.publish(final)
        await wait_for(lambda: tap.of(ReplyCommitted, uid), timeout=30)
        assert llm.proc is not None
        os.kill(llm.proc.pid, signal.SIGSTOP)
        await asyncio.sleep(3.0)  # past the 2 s ack wait: the transcript is redelivered
        os.kill(llm.proc.pid, signal.SIGCONT)
        done: ReplyDone = await tap.done(uid, timeout=60)
        await quiescent(bus, timeout=30)
    finally:
        llm.stop()
        await server.stop()
    assert [e.generation for e in tap.of(ReplyStarted, uid)] == [t.event_id]
    assert not tap.of(ReplyDiscarded, uid)
    assert done.generation == t.event_id and done.tokens == 12 and done.finish_reason == "stop"
    assert len(tap.of(ReplyDone, uid)) == 1
