"""The event log: SQL tables (events + projections), batched idempotent appends, migrations."""

from workers.runtime.eventlog.projections import Timings, timings
from workers.runtime.eventlog.store import EventLog, Record, make_engine, row_event
from workers.runtime.eventlog.tables import ConversationRow, EventRow, TurnRow

__all__ = [
    "ConversationRow",
    "EventLog",
    "EventRow",
    "Record",
    "Timings",
    "TurnRow",
    "make_engine",
    "row_event",
    "timings",
]
