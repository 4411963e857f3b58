"""One event the database refuses must not stop recording for everyone.

The recorder tells a refused row (the same on every try) from a database that is away (see
test_recorder's outage test): it bisects the batch, stores the rest and dead-letters the one
event that fails alone, with the database's reason."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

import schemas as s
from tests.conftest import _pg_database, wait_for
from tests.test_recorder import conversation_events, recorder
from workers.runtime.bus import DLQ_STREAM, MSG_ID, Bus
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog

pytestmark = pytest.mark.postgres

#: A PostgreSQL trigger refusing a row as the database refuses a value it cannot hold
#: (SQLSTATE class 22, data exception, which is what a NUL in a text column raises). The
#: schemas now refuse every such value we know of before it is published; this stands for
#: the next one nobody has thought of yet.
REFUSE = """
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.envelope LIKE '%poison%' THEN
    RAISE EXCEPTION 'cannot store this value' USING ERRCODE = '22021';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON events
  FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""


async def dead_letters(bus: Bus) -> list[tuple[str, dict[str, str]]]:
    info = await bus.js.stream_info(DLQ_STREAM)
    if not info.state.messages:
        return []
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(DLQ_STREAM, seq)
        out.append((msg.data.decode(errors="replace"), dict(msg.headers or {})))
    return out


async def test_an_event_the_database_refuses_is_dead_lettered_and_the_rest_stored(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    pg = _pg_database()
    db_url = next(pg)
    log = EventLog(db_url, migrate=True)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(REFUSE)
    settings = settings.model_copy(update={"database_url": db_url})
    events = conversation_events("p", turns=4, chunks=30)
    b = {"endpoint": "device", "conversation_id": "p", "utterance_id": "p-t1"}
    poison = s.Transcript(**b, text="a poison question")
    # In the middle of the stream, so the recorder's batches hold events on both sides.
    events.insert(len(events) // 2, poison)
    proc = recorder(settings, tmp_path)
    try:
        # Everything is in the stream before the recorder starts: it reads it in big batches.
        for e in events:
            await bus.publish(e)
        proc.start()
        good = [e for e in events if e is not poison]
        await wait_for(lambda: log.count() >= len(good), timeout=60)
        await wait_for(lambda: dead_letters(bus), timeout=30)

        async def all_acked() -> bool:
            info = await bus.js.consumer_info(bus.stream, "recorder")
            return info.num_ack_pending == 0 and info.num_pending == 0

        await wait_for(all_acked, timeout=30)
        # And it keeps recording afterwards.
        later = conversation_events("after", turns=1, chunks=5)
        for e in later:
            await bus.publish(e)
        await wait_for(lambda: log.count() >= len(good) + len(later), timeout=30)
        assert proc.stop() == 0
    finally:
        proc.stop()
    stored = {r.event_id for r in log.event_rows(with_payload=False)}
    assert stored == {e.event_id for e in good + later}
    ((body, headers),) = await dead_letters(bus)
    assert headers[MSG_ID].startswith("dlq-recorder-")
    assert headers["Dlq-Consumer"] == "recorder"
    assert "event log refused it" in headers["Dlq-Reason"]
    assert "cannot store this value" in headers["Dlq-Reason"]
    assert json.loads(body)["event_id"] == poison.event_id
    # The turn of the refused transcript is still projected from its other events.
    assert [t.utterance_id for t in log.turns("p")] == [f"p-t{i}" for i in range(4)]
    assert "refused" in (tmp_path / "recorder.log").read_text()
    log.close()
    pg.close()


async def test_raw_bytes_with_a_nul_are_refused_at_the_schema_and_the_rest_stored(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    # A producer that skips validation (raw bytes on the subject): the NUL that PostgreSQL
    # refuses on every try must stop at the schema, with a reason naming it.
    pg = _pg_database()
    db_url = next(pg)
    settings = settings.model_copy(update={"database_url": db_url})
    events = conversation_events("n", turns=2, chunks=10)
    b = {"endpoint": "device", "conversation_id": "n", "utterance_id": "n-t0"}
    bad = [
        s.Transcript(**b, text="nul here").model_dump(mode="json"),
        s.ControlError(**b, failed_stage="llm", code="x", message="nul here").model_dump(
            mode="json"
        ),
        s.Transcript(
            **b, text="fine", words=(s.Word(word="nul here", start_s=0, end_s=1, probability=1),)
        ).model_dump(mode="json"),
        {**s.Transcript(**b, text="fine").model_dump(mode="json"), "seq": 2**40},  # > int4
    ]
    types = ["stt.transcript", "control.error", "stt.transcript", "stt.transcript"]
    proc = recorder(settings, tmp_path).start()
    log: EventLog | None = None
    try:
        await proc.wait_consumer(bus)
        for doc, t in zip(bad, types, strict=True):
            body = json.dumps({"type": t, **doc}).replace("nul here", "nul\\u0000here")
            subject = f"voice.device.n.{t}"
            await bus.js.publish(subject, body.encode(), headers={MSG_ID: doc["event_id"]})
        for e in events:
            await bus.publish(e)
        log = EventLog(db_url, migrate=False)
        await wait_for(lambda: log.count() >= len(events), timeout=60)
        letters = await wait_for(lambda: _at_least(dead_letters(bus), len(bad)), timeout=30)
    finally:
        proc.stop()
    reasons = [h["Dlq-Reason"] for _, h in letters]
    assert sum("NUL" in r for r in reasons) == 3, reasons
    assert any("seq" in r and "less than or equal" in r for r in reasons), reasons
    assert log is not None and log.count() == len(events)
    log.close()
    pg.close()


async def _at_least(letters, n: int):  # type: ignore[no-untyped-def]
    got = await letters
    return got if len(got) >= n else None
