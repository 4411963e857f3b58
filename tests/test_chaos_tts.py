"""Chaos at the tts worker: killed -9 in the middle of a sentence, restarted, it speaks the
sentence again without a gap or a doubled seq in the reply's audio chunks."""

from __future__ import annotations

import contextlib
from pathlib import Path

import nats.errors
import pytest

import schemas as s
from tests.conftest import wait_for
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.procs import WorkerProcess

pytestmark = pytest.mark.slow

# Many clauses: synthesized clause by clause, so its audio is on the bus long before its end.
LONG = (
    "Well, first you fill a small pot with water, then you bring it to a rolling boil, "
    "then you lower the eggs in gently with a spoon, then you wait for about nine minutes, "
    "then you move them into cold water, and then, at last, you peel them and enjoy them."
)


async def test_tts_killed_mid_sentence_resumes_without_gap_or_double(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    conv, utt = "chaos-tts", s.new_id()
    chunks: dict[str, s.TtsAudioChunk] = {}
    done: list[s.TtsDone] = []

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        e = s.decode(msg.data)
        if isinstance(e, s.TtsAudioChunk):
            chunks[e.event_id] = e
        elif isinstance(e, s.TtsDone):
            done.append(e)

    sub = await bus.nc.subscribe(s.subject_filter("*", conv), cb=on_msg)
    tts = WorkerProcess(
        "tts", settings, env={"TTS_ACK_WAIT_S": "2"}, log_file=tmp_path / "tts.log"
    ).start()
    try:
        await tts.wait_consumer(bus, timeout=60)
        common = {
            "endpoint": "device",
            "conversation_id": conv,
            "utterance_id": utt,
            "producer": "llm",
        }
        await bus.publish(s.ReplyStarted(**common))
        await bus.publish(s.ReplySentence(seq=0, text=LONG, index=0, **common))
        await bus.publish(s.ReplyDone(text=LONG, sentences=1, tokens=60, **common))
        await wait_for(lambda: len(chunks) >= 3, timeout=30, interval=0.002)
        tts.kill()
        before = len(chunks)
        tts.start()
        await wait_for(lambda: done, timeout=30)
    finally:
        await sub.unsubscribe()
        tts.stop()
    # What the stream stored (a core subscriber also sees re-publishes JetStream dropped).
    stored = await bus.js.subscribe(
        s.subject_filter("*", conv, s.TtsAudioChunk.type), stream=bus.stream, ordered_consumer=True
    )
    seqs: dict[int, set[str]] = {}
    with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
        while True:
            c = s.decode((await stored.next_msg(timeout=1.0)).data)
            seqs.setdefault(c.seq, set()).add(c.event_id)
    await stored.unsubscribe()
    assert before < done[0].chunks, "the kill came after the sentence was spoken"
    assert sorted(seqs) == list(range(done[0].chunks))
    assert all(len(ids) == 1 for ids in seqs.values())
