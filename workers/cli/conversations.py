"""`just conversations [--limit N] [--json]`: the recorded conversations, newest first.

One line each: id, the endpoint it was spoken from ("device", "web:3f2a", "demo-1c9e04d2"),
when it started (local time), turns, the first words the user said and the median
voice-to-voice latency of its turns (from the real end of speech to the first reply audio
heard). Read from
the event log's projections only: no NATS, no workers. With --json the last stdout line is
{"conversations": [{"conversation_id", "endpoint", "started_at", "turns", "first_words",
"voice_to_voice_ms"}]}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from workers.runtime.config import get_settings
from workers.runtime.eventlog import EventLog, timings


def summarize(log: EventLog, limit: int | None = None) -> list[dict[str, Any]]:
    out = []
    for c in log.conversations()[:limit]:
        # A turn the user went on speaking after (resumed) is part of the one that resumed it.
        rows = log.turns(c.conversation_id, with_resumed=False)
        v2v = [ms for t in rows if (ms := timings(t).voice_to_voice) is not None]
        out.append(
            {
                "conversation_id": c.conversation_id,
                "endpoint": c.endpoint,
                "started_at": c.started_at,
                "turns": len(rows),
                "first_words": c.first_words,
                "voice_to_voice_ms": round(statistics.median(v2v), 1) if v2v else None,
            }
        )
    return out


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def table(rows: list[dict[str, Any]]) -> str:
    w = max([2] + [len(r["conversation_id"]) for r in rows])
    e = max([8] + [len(r["endpoint"] or "-") for r in rows])
    lines = [f"{'id':{w}}  {'endpoint':{e}}  {'when':16}  {'turns':>5}  {'v2v ms':>6}  first words"]
    for r in rows:
        v2v = "-" if r["voice_to_voice_ms"] is None else f"{r['voice_to_voice_ms']:.0f}"
        words = r["first_words"] or "(no speech)"
        lines.append(
            f"{r['conversation_id']:{w}}  {r['endpoint'] or '-':{e}}  "
            f"{when(r['started_at']):16}  {r['turns']:>5}  {v2v:>6}  {words[:48]}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="just conversations",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--limit", type=int, default=None, help="only the N newest")
    p.add_argument("--json", action="store_true", help="end with one JSON line on stdout")
    args = p.parse_args(argv)
    settings = get_settings()
    try:
        log = EventLog(settings.db_url)
        try:
            rows = summarize(log, args.limit)
        finally:
            log.close()
    except SQLAlchemyError as exc:
        print(f"conversations: error: reading {settings.db_url}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"conversations": rows}))
    elif rows:
        print(table(rows))
    else:
        print(f"no conversations recorded yet in {settings.db_url} (try: just demo)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
