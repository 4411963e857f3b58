"""Chaos on a 3-node cluster: R3 streams, the event log on PostgreSQL, every worker its own
process with the list of the three servers.

Three conversations speak at once. Once replies are being generated the VOICE stream's
leader is killed -9; a moment later a second node (JetStream now has no quorum: nothing can
be stored until a node is back); then both are restarted. Every turn must end (answered, or
with a control.error naming the cause), no event lost or doubled (the log audit, the chunk
counts), and `just verify` clean.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import schemas as s
from ops.chaos import audit, dead_letters, quiescent
from tests.conftest import _pg_database
from tests.test_chaos_pipeline import ENV, Watcher, question_wavs, turn_ended
from workers.cli.pipeline import Pipeline
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog, row_event
from workers.runtime.eventlog.verify import verify
from workers.runtime.natscluster import NatsCluster, free_cluster_ports, wait_jetstream

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TURN_TIMEOUT_S = 90.0


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_database()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    c = NatsCluster(
        free_cluster_ports(3),
        tmp_path / "cluster",
        sync_interval="always",
        log_dir=tmp_path / "cluster",
    )
    c.start()
    try:
        yield c
    finally:
        c.stop()


async def test_stream_leader_then_another_node_killed_mid_turn_loses_and_doubles_nothing(
    cluster: NatsCluster, pg_url: str, tmp_path: Path
) -> None:
    await wait_jetstream(cluster.urls)
    settings = Settings(
        nats_url=cluster.nats_url,
        stream_replicas=3,
        data_dir=tmp_path / "data",
        database_url=pg_url,
        _env_file=None,  # type: ignore[call-arg]
    )
    wavs = await asyncio.to_thread(question_wavs, tmp_path / "questions")
    conversations = [f"cluster-{i}-{s.new_id()[:8]}" for i in range(3)]
    watcher = Watcher()
    t0 = time.monotonic()
    async with Pipeline(settings, env=ENV, quiet=True) as p:
        assert p.bus is not None and p.nats is None
        subs = [await p.watch(c, watcher.on_event) for c in conversations]
        log = EventLog(settings.db_url, migrate=False)
        mics = [
            p.start_mic("--file", str(wavs[i]), "--conversation", c, "--fast", worker_id=f"mic-{i}")
            for i, c in enumerate(conversations)
        ]
        starts = []
        for c in conversations:
            e = await watcher.wait(
                lambda e, c=c: e.conversation_id == c and isinstance(e, s.VoiceStarted), 60
            )
            starts.append(e.utterance_id)
        await watcher.wait(lambda e: e.type == "llm.reply-token", TURN_TIMEOUT_S)
        info = await p.bus.js.stream_info(p.bus.stream)
        assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        leader = cluster.node_named(info.cluster.leader or "")
        other = next(n for n in cluster.nodes if n is not leader)
        leader.kill()
        print(f"killed leader {leader.server_name} at {time.monotonic() - t0:.1f} s")
        await asyncio.sleep(1.5)
        other.kill()
        print(f"killed {other.server_name}: no quorum")
        await asyncio.sleep(2.0)
        await asyncio.to_thread(leader.start)
        await asyncio.to_thread(other.start)
        print(f"both restarted at {time.monotonic() - t0:.1f} s")
        for utt in starts:
            await turn_ended(log, utt, TURN_TIMEOUT_S)
        for m in mics:
            await asyncio.to_thread(m.stop)
        await quiescent(p.bus, timeout=60)
        dlq = await dead_letters(p.bus)
        for sub in subs:
            await sub.unsubscribe()
        result = await asyncio.to_thread(audit, log)
        verified = await asyncio.to_thread(verify, log, conversations)
        rows = []
        for c in conversations:
            rows.extend(await asyncio.to_thread(log.event_rows, c, None, None, False))
        mic_stored = 0
        for c in conversations:
            si = await p.bus.js.stream_info(
                p.bus.stream, subjects_filter=s.subject_filter("*", c, "mic.audio-chunk")
            )
            mic_stored += sum((si.state.subjects or {}).values())
        log.close()
    print(f"cluster chaos: {result.as_dict()} dlq={dlq} in {time.monotonic() - t0:.0f} s")

    assert result.problems == []  # every turn ended; no duplicate; no gap in any sequence
    assert [v.line() for v in verified] == []  # `just verify`
    assert result.turns == len(conversations)
    assert result.completed + result.failed == len(conversations)
    declared = sum(row_event(r).chunks for r in rows if r.type == "mic.voice-stopped")  # type: ignore[attr-defined]
    recorded = sum(1 for r in rows if r.type == "mic.audio-chunk")
    assert declared == mic_stored == recorded  # no audio chunk lost
    assert dlq == 0
