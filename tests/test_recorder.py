"""The recorder worker as a real process: bus -> recorder -> SQL, nothing lost or doubled."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

import schemas as s
from tests.conftest import wait_for
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog
from workers.runtime.eventlog.verify import check_projections
from workers.runtime.procs import WorkerProcess


def conversation_events(conv: str, turns: int, chunks: int) -> list[s.Event]:
    out: list[s.Event] = []
    for t in range(turns):
        b = {"endpoint": "device", "conversation_id": conv, "utterance_id": f"{conv}-t{t}"}
        out.append(s.VoiceStarted(**b))
        pcm = random.randbytes(640)
        out += [s.MicAudioChunk(**b, seq=i, audio=pcm) for i in range(chunks)]
        out.append(s.VoiceStopped(**b, chunks=chunks, duration_ms=20.0 * chunks, speech_end_ts=0))
        out.append(s.Transcript(**b, text=f"question {t}"))
    return out


async def publish_all(bus: Bus, events: list[s.Event]) -> None:
    for i in range(0, len(events), 200):
        futs = [await bus.publish_nowait(e) for e in events[i : i + 200]]
        await asyncio.gather(*futs)


def recorder(settings: Settings, tmp_path: Path) -> WorkerProcess:
    return WorkerProcess(
        "recorder", settings, env={"RECORDER_ACK_WAIT_S": "1"}, log_file=tmp_path / "recorder.log"
    )


async def test_events_round_trip_publish_to_recorder_to_log(
    bus: Bus, settings: Settings, db_url: str, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"database_url": db_url})
    events = conversation_events("rt", turns=3, chunks=40)
    proc = recorder(settings, tmp_path).start()
    try:
        await proc.wait_consumer(bus)
        await publish_all(bus, events)
        log = EventLog(db_url, migrate=False)
        await wait_for(lambda: log.count() >= len(events), timeout=30)
    finally:
        assert proc.stop() == 0  # SIGTERM drains and exits cleanly
    assert log.events() == events  # same ids, order, fields and audio bytes
    assert [t.transcript for t in log.turns("rt")] == ["question 0", "question 1", "question 2"]
    log.close()


async def test_kill_recorder_mid_batch_loses_nothing_and_duplicates_nothing(
    bus: Bus, settings: Settings, db_url: str, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"database_url": db_url})
    events = [e for c in range(4) for e in conversation_events(f"k{c}", turns=2, chunks=300)]
    proc = recorder(settings, tmp_path).start()
    log = EventLog(db_url, migrate=True)
    try:
        await proc.wait_consumer(bus)
        publisher = asyncio.create_task(publish_all(bus, events))
        kills = 0
        for _ in range(3):
            # Kill -9 while batches are being written, then restart on the same durable.
            before = log.count()
            await wait_for(lambda b=before: log.count() > b + 100, timeout=30)
            proc.kill()
            kills += 1
            proc.start()
        await publisher
        await wait_for(lambda: log.count() >= len(events), timeout=60)

        async def all_acked() -> bool:
            info = await bus.js.consumer_info(bus.stream, "recorder")
            return info.num_ack_pending == 0 and info.num_pending == 0

        # What the killed recorders held is redelivered (after ack_wait) and absorbed.
        await wait_for(all_acked, timeout=30)
    finally:
        proc.stop()
    rows = log.event_rows(with_payload=False)
    ids = [r.event_id for r in rows]
    assert kills == 3
    assert len(ids) == len(set(ids)) == len(events)
    assert set(ids) == {e.event_id for e in events}
    # Every stream message is in the log exactly once.
    assert sorted(r.stream_seq for r in rows) == list(range(1, len(events) + 1))
    for c in range(4):
        for turn in log.turns(f"k{c}"):
            assert turn.chunks == 300  # projections counted each chunk once
    log.close()


@pytest.mark.postgres
async def test_a_database_outage_delays_the_log_and_loses_nothing(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    # A real outage of our own test database: connections refused and the open ones cut,
    # while events keep coming. They must wait in the stream, not go to the dead letters.
    import psycopg

    from tests.conftest import PG_ADMIN_URL, _pg_database

    pg = _pg_database()
    db_url = next(pg)
    name = db_url.rsplit("/", 1)[1]
    admin = psycopg.connect(os.environ.get("PG_ADMIN_URL", PG_ADMIN_URL), autocommit=True)

    def outage(on: bool) -> None:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if on else "true"}')
        if on:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )

    settings = settings.model_copy(update={"database_url": db_url})
    before = conversation_events("pre", turns=1, chunks=20)
    during = conversation_events("out", turns=3, chunks=40)
    proc = recorder(settings, tmp_path).start()
    log = EventLog(db_url, migrate=False)
    try:
        await proc.wait_consumer(bus)
        await publish_all(bus, before)
        await wait_for(lambda: log.count() >= len(before), timeout=30)
        log.close()
        outage(True)
        await publish_all(bus, during)
        await asyncio.sleep(8)  # failed commits and retries (the old recorder gave up by then)
        assert proc.running, (tmp_path / "recorder.log").read_text()[-2000:]
        outage(False)
        log = EventLog(db_url, migrate=False)
        await wait_for(lambda: log.count() >= len(before) + len(during), timeout=60)
        assert proc.stop() == 0
        # Retried batches land in another order; the projections must not care.
        stored = log.events(conversation_id="out")
        assert sorted(stored, key=_key) == sorted(during, key=_key)
        assert check_projections(log, "out") == []
        assert [t.transcript for t in log.turns("out")] == [f"question {i}" for i in range(3)]
        dlq = await bus.js.stream_info("VOICE_DLQ")
        assert dlq.state.messages == 0
        assert "will retry" in (tmp_path / "recorder.log").read_text()  # it did fail
    finally:
        proc.stop()
        log.close()
        outage(False)
        admin.close()
        pg.close()  # drops the database


def _key(e: s.Event) -> tuple[str, str, int]:
    return (e.utterance_id, e.type, e.seq)
