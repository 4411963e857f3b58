"""`just verify [ID ...] [--json]`: check the event log's integrity and print what is wrong.

Checks sequence continuity, announced counts, each turn's lifecycle and that the projections
equal a rebuild from the events (see workers.runtime.eventlog.verify). Exit 0 when clean,
1 with one line per problem otherwise, 2 on bad input. With --json the last stdout line is
`{"conversations": N, "problems": [{"conversation_id", "utterance_id", "check", "message"}]}`.
"""

from __future__ import annotations

import argparse
import json
import sys

from sqlalchemy.exc import SQLAlchemyError

from workers.runtime.config import Settings, get_settings
from workers.runtime.eventlog import EventLog
from workers.runtime.eventlog.verify import conversation_ids, verify


def open_log_or_fail(prog: str, settings: Settings) -> EventLog | None:
    """The event log at DATABASE_URL, or None after printing a one-line error."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    url = settings.db_url
    try:
        u = make_url(url)
    except Exception:
        print(f"{prog}: error: DATABASE_URL {url!r} is not a database URL", file=sys.stderr)
        return None
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        if not Path(u.database).is_file():
            print(
                f"{prog}: error: no event log at {u.database} (set DATA_DIR or DATABASE_URL)",
                file=sys.stderr,
            )
            return None
    try:
        return EventLog(url)
    except Exception as exc:  # driver missing, server down, not a database file ...
        print(
            f"{prog}: error: cannot open the event log at {u.render_as_string()}: "
            f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}",
            file=sys.stderr,
        )
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="verify", description=__doc__.split("\n")[0])
    p.add_argument("ids", nargs="*", metavar="ID", help="conversation ids (default: all)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    args = p.parse_args(argv)
    settings = get_settings()
    log = open_log_or_fail("verify", settings)
    if log is None:
        return 2
    try:
        known = set(conversation_ids(log))
        unknown = [c for c in args.ids if c not in known]
        if unknown:
            print(f"verify: error: unknown conversation id {unknown[0]!r}", file=sys.stderr)
            return 2
        ids = args.ids or sorted(known)
        problems = verify(log, ids)
    except SQLAlchemyError as exc:
        print(
            f"verify: error: cannot read the event log: {exc.__class__.__name__}", file=sys.stderr
        )
        return 2
    finally:
        log.close()
    for prob in problems:
        print(prob.line())
    if args.json:
        doc = {"conversations": len(ids), "problems": [x.as_dict() for x in problems]}
        print(json.dumps(doc))
    else:
        verdict = "ok" if not problems else f"{len(problems)} problem(s)"
        print(f"verify: {len(ids)} conversation(s), {verdict}", file=sys.stderr)
    recorder_status(settings)
    return 1 if problems else 0


def recorder_status(settings: Settings) -> None:
    """What the log does not have yet: the recorder's lag behind JetStream (stderr), when a
    NATS server listens at NATS_URL."""
    import asyncio

    from workers.runtime.natsd import is_listening
    from workers.runtime.streams import status

    if not is_listening(settings.nats_url):
        return
    try:
        line = asyncio.run(status(settings))
    except Exception as exc:  # no stream yet, refused: the log check stands on its own
        line = f"recorder lag unknown ({exc.__class__.__name__})"
    print(f"verify: {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
