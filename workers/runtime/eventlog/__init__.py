"""The event log: SQL tables (events + projections), batched idempotent appends, migrations."""

from workers.runtime.eventlog.projections import Timings, timings
from workers.runtime.eventlog.store import (
    EventLog,
    Record,
    Refused,
    is_transient,
    make_engine,
    row_event,
)
from workers.runtime.eventlog.tables import ConversationRow, EventRow, TurnRow

__all__ = [
    "ConversationRow",
    "EventLog",
    "EventRow",
    "Record",
    "Refused",
    "Timings",
    "TurnRow",
    "is_transient",
    "make_engine",
    "row_event",
    "timings",
]
