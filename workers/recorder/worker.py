"""Recorder worker: batches of events -> one transaction -> ack.

Acks only after the commit, so a crash before it means redelivery; the log ignores event ids
it already has, so redelivery never duplicates. Run a single instance: projections are
updated read-modify-write inside the batch transaction.

A failed commit (database down, disk full) is not the events' fault: they are nak'd with a
growing delay and tried again for as long as it takes, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js.api import DeliverPolicy
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.routing import RECORDER
from workers.runtime.bus import Bus, Consumer, Delivery
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog, Record
from workers.runtime.service import Worker
from workers.runtime.streams import Lag, recorder_lag

log = logging.getLogger("voicebus.recorder")
RETRY_S = 0.5
RETRY_MAX_S = 10.0


class RecorderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECORDER_", env_file=".env", extra="ignore")

    batch: int = 256
    """RECORDER_BATCH: most events per transaction."""
    max_ack_pending: int = 8192
    """RECORDER_MAX_ACK_PENDING: back-pressure bound on unacknowledged events."""
    ack_wait_s: float = 5.0
    """RECORDER_ACK_WAIT_S: after a crash, events the dead recorder held come back after this
    long (a batch commit takes milliseconds, so it can be short)."""
    lag_check_s: float = 10.0
    """RECORDER_LAG_CHECK_S: how often the recorder measures how far behind the stream it is."""
    lag_warn_s: float = 60.0
    """RECORDER_LAG_WARN_S: warn when the oldest unrecorded event is older than this."""
    fill_warn: float = 0.8
    """RECORDER_FILL_WARN: warn when the stream is this full (at 1.0 it refuses events)."""


def record_of(d: Delivery) -> Record:
    head, _, payload = d.msg.data.partition(b"\n")
    return Record(
        event=d.event,
        envelope=head.decode(),
        payload=payload if d.event.HAS_PAYLOAD else None,
        subject=d.subject,
        traceparent=d.headers.get("traceparent", ""),
        stream_seq=d.stream_seq,
    )


class Recorder(Worker):
    name = "recorder"

    def __init__(self, bus: Bus, settings: Settings) -> None:
        super().__init__(bus, settings)
        self.options = RecorderSettings()
        self.eventlog: EventLog | None = None
        self.written = 0
        """Events new to the log."""
        self.committed = 0
        """Deliveries committed and acked (redeliveries and repeats included)."""
        self.lag: Lag | None = None
        """The last lag measured."""

    async def setup(self) -> None:
        self.eventlog = await asyncio.to_thread(EventLog, self.settings.db_url)

    def consumers(self) -> list[Consumer]:
        return [
            self.route_consumer(
                RECORDER,
                batch_handler=self.write,
                batch=self.options.batch,
                max_ack_pending=self.options.max_ack_pending,
                ack_wait=self.options.ack_wait_s,
                deliver_policy=DeliverPolicy.ALL,
                fetch_timeout=0.25,
            )
        ]

    async def background(self) -> None:
        """Alarm on lag: an event older than STREAM_MAX_AGE_S leaves the stream recorded or not,
        and a full stream refuses new events."""
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.options.lag_check_s)
            if self.stopping.is_set() or not self._consumers:
                return
            try:
                self.lag = await recorder_lag(self.bus, self._consumers[0].durable)
            except Exception as exc:  # reconnecting: measured again next time
                log.info("lag check failed", extra={"error": repr(exc)})
                continue
            o = self.options
            for warning in self.lag.warnings(
                self.settings.stream_max_age_s, o.lag_warn_s, o.fill_warn
            ):
                log.warning(warning, extra={"lag_events": self.lag.events})

    async def write(self, deliveries: list[Delivery]) -> None:
        """The consumer's batch handler: one transaction; the consumer acks after it."""
        assert self.eventlog is not None
        try:
            new = await asyncio.to_thread(self.eventlog.append, [record_of(d) for d in deliveries])
        except Exception as exc:
            log.error(
                "batch commit failed; will retry",
                extra={"events": len(deliveries), "error": repr(exc)},
            )
            for d in deliveries:
                d.defer()  # not acked, and not counted as failed by the consumer
                await d.nak(delay=min(RETRY_MAX_S, RETRY_S * d.num_delivered))
            return
        self.written += new
        self.committed += len(deliveries)
        log.debug("batch committed", extra={"events": len(deliveries), "new": new})

    async def aclose(self) -> None:
        if self.eventlog is not None:
            self.eventlog.close()
