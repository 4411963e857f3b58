"""`just purge --older-than 30d [--dry-run] [--json]`: retention for old conversations.

A conversation is old when its newest event is older than the given age. For each one this
deletes its events and projections from the event log, its reply audio under
DATA_DIR/replies/<ID>/, and its JetStream copies (`voice.<ID>.>` purged from the stream; the
embedded server is started when nothing listens at NATS_URL). JetStream goes first: if NATS
cannot be reached nothing is deleted. With --json the last stdout line is
`{"conversations": [...], "events": N, "dry_run": bool}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import time

from sqlalchemy import func, select

from schemas import subject_filter
from workers.cli.verify import open_log_or_fail
from workers.runtime.bus import Bus, BusError
from workers.runtime.config import Settings, get_settings
from workers.runtime.eventlog import EventLog
from workers.runtime.eventlog.store import EVENTS
from workers.runtime.natsd import NatsServerError, ensure_nats
from workers.runtime.streams import ensure_streams

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """ "30d" -> seconds; units s, m, h, d, w."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not m:
        raise ValueError(f"bad age {text!r}: want a number and a unit, e.g. 30d, 12h, 2w")
    return float(m.group(1)) * _UNITS[m.group(2)]


def old_conversations(log: EventLog, cutoff: float) -> list[tuple[str, int]]:
    """(conversation id, events) of conversations whose newest event is before `cutoff`."""
    q = (
        select(EVENTS.c.conversation_id, func.count(), func.max(EVENTS.c.ts))
        .group_by(EVENTS.c.conversation_id)
        .having(func.max(EVENTS.c.ts) < cutoff)
        .order_by(func.max(EVENTS.c.ts))
    )
    with log.engine.connect() as conn:
        return [(r[0], int(r[1])) for r in conn.execute(q)]


async def purge_stream(settings: Settings, ids: list[str]) -> int:
    """Remove the conversations' messages from the JetStream stream; returns how many."""
    bus = await Bus.connect(settings, name="purge")
    try:
        await ensure_streams(bus)
        removed = 0
        for conv in ids:
            subject = subject_filter("*", conv)
            info = await bus.js.stream_info(bus.stream, subjects_filter=subject)
            removed += sum((info.state.subjects or {}).values())
            await bus.js.purge_stream(bus.stream, subject=subject)
        return removed
    finally:
        await bus.close()


def delete_files(settings: Settings, ids: list[str]) -> int:
    root = (settings.data_dir / "replies").resolve()
    n = 0
    for conv in ids:
        d = (root / conv).resolve()
        if d.parent == root and d.is_dir():  # ids are subject tokens; never leave `replies`
            shutil.rmtree(d)
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="purge", description=__doc__.split("\n")[0])
    p.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h, 2w")
    p.add_argument("--dry-run", action="store_true", help="list what would go, delete nothing")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    args = p.parse_args(argv)
    try:
        age = parse_age(args.older_than)
    except ValueError as exc:
        print(f"purge: error: {exc}", file=sys.stderr)
        return 2
    settings = get_settings()
    log = open_log_or_fail("purge", settings)
    if log is None:
        return 2
    try:
        old = old_conversations(log, time.time() - age)
        ids = [c for c, _ in old]
        events = sum(n for _, n in old)
        stream_msgs = files = 0
        if ids and not args.dry_run:
            try:
                server = ensure_nats(settings)
            except NatsServerError as exc:
                print(f"purge: error: {exc}; nothing deleted", file=sys.stderr)
                return 1
            try:
                stream_msgs = asyncio.run(purge_stream(settings, ids))
            except BusError as exc:
                print(f"purge: error: {exc}; nothing deleted", file=sys.stderr)
                return 1
            finally:
                if server is not None:
                    server.stop()
            files = delete_files(settings, ids)
            log.delete_conversations(ids)
    finally:
        log.close()
    verb = "would delete" if args.dry_run else "deleted"
    for conv, n in old:
        print(f"{conv}\t{n} events")
    print(
        f"purge: {verb} {len(ids)} conversation(s), {events} events"
        + ("" if args.dry_run else f", {stream_msgs} JetStream messages, {files} reply folders"),
        file=sys.stderr,
    )
    if args.json:
        doc = {
            "conversations": ids,
            "events": events,
            "stream_messages": stream_msgs,
            "reply_folders": files,
            "dry_run": args.dry_run,
        }
        print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
