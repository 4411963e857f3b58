"""The event log: batched, idempotent appends of events and their projections.

One `append` = one transaction: the new events (multi-row Core insert, conflicts on event_id
ignored) and the projection rows they change. Only events that were actually inserted touch
the projections, so redelivered events change nothing. SQLite runs in WAL mode with
synchronous=FULL (each commit is fsynced); PostgreSQL goes through the same code.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from schemas import Event, decode, event_types
from workers.runtime.eventlog import projections
from workers.runtime.eventlog.tables import ConversationRow, EventRow, TurnRow
from workers.runtime.telemetry import trace_id_of

#: The version a producer wrote, read from the envelope as received (before upcasting).
_VERSION = re.compile(rb'"schema_version":\s*(\d+)')

EVENTS = EventRow.__table__
TURNS = TurnRow.__table__
CONVERSATIONS = ConversationRow.__table__


def is_transient(exc: BaseException) -> bool:
    """Whether a failed append is the database's state, not the events' content: connection
    lost or refused, disk full, lock or statement timeout, deadlock (all OperationalError on
    PostgreSQL and SQLite), a pool timeout. Those are retried as they are. An event the
    database refuses (DataError: a value it cannot hold; IntegrityError: a constraint) or one
    our projection code chokes on fails the same way on every try: it is the event's fault."""
    if isinstance(exc, (DataError, IntegrityError)):
        return False
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout, OSError)):
        return True
    # Other database errors (a missing table, a permission) are the operator's to fix and
    # no event's fault: wait for them rather than dead-letter good events.
    return isinstance(exc, SQLAlchemyError)


@dataclass(frozen=True)
class Refused:
    """A record the event log refused for what it holds, and why."""

    index: int
    """Its position in the batch given to `append_or_refuse`."""
    reason: str


@dataclass(frozen=True)
class Record:
    """An event as received: the typed event plus the exact bytes and bus metadata."""

    event: Event
    envelope: str
    payload: bytes | None
    subject: str = ""
    traceparent: str = ""
    stream_seq: int = 0
    received_version: int = 0
    """The schema version the producer wrote (the event itself is upcast to the current)."""

    @classmethod
    def from_body(
        cls, body: bytes, subject: str = "", traceparent: str = "", stream_seq: int = 0
    ) -> Record:
        head, _, payload = body.partition(b"\n")
        event = decode(body)
        found = _VERSION.search(head)
        version = int(found.group(1)) if found else 1  # no version written: the first
        return cls(
            event,
            head.decode(),
            payload if event.HAS_PAYLOAD else None,
            subject,
            traceparent,
            stream_seq,
            version,
        )

    @classmethod
    def of(cls, event: Event, traceparent: str = "") -> Record:
        from schemas import encode

        return cls.from_body(encode(event), event.subject(), traceparent)

    def row(self, recorded_at: float) -> dict[str, Any]:
        e = self.event
        return {
            "event_id": e.event_id,
            "type": e.type,
            "conversation_id": e.conversation_id,
            "utterance_id": e.utterance_id,
            "producer": e.producer,
            "seq": e.seq,
            "ts": e.ts,
            "schema_version": self.received_version or e.schema_version,
            "subject": self.subject,
            "envelope": self.envelope,
            "payload": self.payload,
            "traceparent": self.traceparent[:64],
            "stream_seq": self.stream_seq,
            "recorded_at": recorded_at,
        }


def make_engine(url: str) -> Engine:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if u.get_backend_name() == "postgresql" and u.drivername == "postgresql":
        url = u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(url, pool_pre_ping=True)


def _insert(engine: Engine):  # type: ignore[no-untyped-def]
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - other databases are not supported
        raise RuntimeError(
            f"unsupported database {engine.dialect.name!r}: use SQLite or PostgreSQL"
        )
    return insert


class EventLog:
    def __init__(self, url: str, migrate: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._insert = _insert(self.engine)
        if migrate:
            from workers.runtime.eventlog.migrate import upgrade

            upgrade(url)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing ----------------------------------------------------------------------

    def append(self, records: Sequence[Record]) -> int:
        """Store records in one transaction; returns how many were new (not duplicates)."""
        if not records:
            return 0
        now = time.time()
        rows = [r.row(now) for r in records]
        stmt = (
            self._insert(EVENTS)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(EVENTS.c.event_id)
        )
        with self.engine.begin() as conn:
            inserted = {row[0] for row in conn.execute(stmt, rows)}
            fresh, seen = [], set()
            for r in records:
                # A batch may carry the same event twice (publisher retry): apply it once.
                if r.event.event_id in inserted and r.event.event_id not in seen:
                    seen.add(r.event.event_id)
                    fresh.append(r)
            if fresh:
                self._project(conn, fresh)
        return len(inserted)

    def append_or_refuse(self, records: Sequence[Record]) -> tuple[int, list[Refused]]:
        """Store what the log can store, in order; returns (new events, refused records).

        A deterministic failure of the whole batch is bisected: each half in its own
        transaction, down to the single records that fail alone. A transient failure (see
        `is_transient`) is raised at once: nothing is the events' fault, retry the batch
        later (the halves already committed are ignored as duplicates then)."""
        refused: list[Refused] = []
        new = self._bisect(list(records), 0, refused)
        return new, refused

    def _bisect(self, records: list[Record], offset: int, refused: list[Refused]) -> int:
        try:
            return self.append(records)
        except Exception as exc:
            if is_transient(exc):
                raise
            if len(records) == 1:
                refused.append(Refused(offset, _reason(exc)))
                return 0
        half = len(records) // 2
        return self._bisect(records[:half], offset, refused) + self._bisect(
            records[half:], offset + half, refused
        )

    def _project(self, conn: Any, records: list[Record]) -> None:
        conv_ids = {r.event.conversation_id for r in records}
        utt_ids = {r.event.utterance_id for r in records}
        convs = {
            row.conversation_id: dict(row._mapping)
            for row in conn.execute(
                select(CONVERSATIONS).where(CONVERSATIONS.c.conversation_id.in_(conv_ids))
            )
        }
        turns = {
            row.utterance_id: dict(row._mapping)
            for row in conn.execute(select(TURNS).where(TURNS.c.utterance_id.in_(utt_ids)))
        }
        known_convs, known_turns = set(convs), set(turns)
        for r in records:
            e = r.event
            conv = convs.get(e.conversation_id)
            if conv is None:
                conv = convs[e.conversation_id] = projections.new_conversation(e)
            projections.apply_conversation(conv, e)
            if not e.TURN_SCOPED:
                continue
            turn = turns.get(e.utterance_id)
            if turn is None:
                turn = turns[e.utterance_id] = projections.new_turn(e, conv["turns"])
                conv["turns"] += 1
            projections.apply_turn(turn, e, trace_id_of(r.traceparent))
        _upsert(conn, CONVERSATIONS, "conversation_id", convs, known_convs)
        _upsert(conn, TURNS, "utterance_id", turns, known_turns)

    # -- reading ----------------------------------------------------------------------

    def count(self, conversation_id: str | None = None) -> int:
        q = select(func.count()).select_from(EVENTS)
        if conversation_id:
            q = q.where(EVENTS.c.conversation_id == conversation_id)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def count_ids(self, event_ids: Iterable[str]) -> int:
        """How many of `event_ids` are in the log."""
        ids = list(set(event_ids))
        if not ids:
            return 0
        q = select(func.count()).select_from(EVENTS).where(EVENTS.c.event_id.in_(ids))
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    async def wait_recorded(self, event_ids: Sequence[str], timeout: float) -> bool:
        """Wait until every one of `event_ids` is in the log (the recorder commits a moment
        after the bus has them); False if they are not after `timeout` or the log fails."""
        wanted = set(event_ids)
        deadline = time.monotonic() + timeout
        while True:
            try:
                have = await asyncio.to_thread(self.count_ids, wanted)
            except SQLAlchemyError:
                return False
            if have >= len(wanted):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)

    def event_rows(
        self,
        conversation_id: str | None = None,
        utterance_id: str | None = None,
        types: Iterable[str] | None = None,
        with_payload: bool = True,
    ) -> list[Any]:
        cols = list(EVENTS.c) if with_payload else [c for c in EVENTS.c if c.name != "payload"]
        q = select(*cols).order_by(EVENTS.c.id)
        if conversation_id:
            q = q.where(EVENTS.c.conversation_id == conversation_id)
        if utterance_id:
            q = q.where(EVENTS.c.utterance_id == utterance_id)
        if types is not None:
            q = q.where(EVENTS.c.type.in_(list(types)))
        with self.engine.connect() as conn:
            return list(conn.execute(q))

    def events(self, **filters: Any) -> list[Event]:
        """Typed events in log order (same filters as event_rows)."""
        return [row_event(r) for r in self.event_rows(**filters)]

    def resumed(self, conversation_id: str) -> set[str]:
        """Utterances of the conversation that a later one resumed (the user only paused):
        the resuming utterance holds their audio and their answer; they are no turn."""
        starts = self.events(conversation_id=conversation_id, types=["mic.voice-started"])
        return {e.resumes for e in starts if getattr(e, "resumes", "")}

    def conversations(self) -> list[Any]:
        q = select(CONVERSATIONS).order_by(CONVERSATIONS.c.started_at.desc())
        with self.engine.connect() as conn:
            return list(conn.execute(q))

    def conversation(self, conversation_id: str) -> Any | None:
        q = select(CONVERSATIONS).where(CONVERSATIONS.c.conversation_id == conversation_id)
        with self.engine.connect() as conn:
            return conn.execute(q).first()

    def turns(self, conversation_id: str, *, with_resumed: bool = True) -> list[Any]:
        """The conversation's turn rows in order; `with_resumed=False` leaves out those a
        later utterance resumed (see `resumed`)."""
        q = (
            select(TURNS)
            .where(TURNS.c.conversation_id == conversation_id)
            .order_by(TURNS.c.turn_index)
        )
        with self.engine.connect() as conn:
            rows = list(conn.execute(q))
        if with_resumed:
            return rows
        resumed = self.resumed(conversation_id)
        return [r for r in rows if r.utterance_id not in resumed]

    def turn(self, utterance_id: str) -> Any | None:
        with self.engine.connect() as conn:
            return conn.execute(select(TURNS).where(TURNS.c.utterance_id == utterance_id)).first()

    # -- maintenance ------------------------------------------------------------------

    def rebuild_projections(self, conversation_id: str) -> tuple[dict[str, Any], list[dict]]:
        """Recompute a conversation's projections from its events (without writing them)."""
        conv: dict[str, Any] | None = None
        turns: dict[str, dict[str, Any]] = {}
        for row in self.event_rows(conversation_id=conversation_id):
            e = row_event(row)
            if conv is None:
                conv = projections.new_conversation(e)
            projections.apply_conversation(conv, e)
            if not e.TURN_SCOPED:
                continue
            if e.utterance_id not in turns:
                turns[e.utterance_id] = projections.new_turn(e, conv["turns"])
                conv["turns"] += 1
            projections.apply_turn(turns[e.utterance_id], e, trace_id_of(row.traceparent))
        return conv or {}, sorted(turns.values(), key=lambda t: t["turn_index"])

    def delete_conversations(self, conversation_ids: Sequence[str]) -> int:
        if not conversation_ids:
            return 0
        ids = list(conversation_ids)
        with self.engine.begin() as conn:
            n = conn.execute(delete(EVENTS).where(EVENTS.c.conversation_id.in_(ids))).rowcount
            conn.execute(delete(TURNS).where(TURNS.c.conversation_id.in_(ids)))
            conn.execute(delete(CONVERSATIONS).where(CONVERSATIONS.c.conversation_id.in_(ids)))
        return int(n or 0)


def _reason(exc: BaseException) -> str:
    """The database's own words (first line) without SQLAlchemy's statement and parameters."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return f"event log refused it: {orig.__class__.__name__}: {first}"[:500]


def row_event(row: Any) -> Event:
    """Typed event of an events row (audio is empty if the row was read without payload)."""
    body = row.envelope.encode()
    cls = event_types().get(row.type)
    if cls is not None and cls.HAS_PAYLOAD:
        body += b"\n" + bytes(getattr(row, "payload", None) or b"")
    return decode(body)


def _upsert(conn: Any, table: Any, key: str, rows: dict[str, dict], known: set[str]) -> None:
    new = [r for k, r in rows.items() if k not in known]
    old = [r for k, r in rows.items() if k in known]
    if new:
        conn.execute(table.insert(), new)
    if old:
        from sqlalchemy import bindparam

        cols = [c.name for c in table.c if c.name != key]
        stmt = (
            update(table)
            .where(table.c[key] == bindparam("_key"))
            .values({c: bindparam(c) for c in cols})
        )
        conn.execute(stmt, [{**r, "_key": r[key]} for r in old])
