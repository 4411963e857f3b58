"""Recorder worker: batches of events -> one transaction -> ack.

Acks only after the commit, so a crash before it means redelivery; the log ignores event ids
it already has, so redelivery never duplicates. Run a single instance: projections are
updated read-modify-write inside the batch transaction.

A failed commit is told apart by its cause. Database down, disk full, lock timeout: not the
events' fault, so they are nak'd with a growing delay and tried again for as long as it takes,
never dead-lettered. A row the database refuses (a value it cannot hold) fails on every try:
the batch is bisected, the rest stored, and the event that fails alone is dead-lettered with
the database's reason and acked, so one bad event never stops recording for everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js.api import DeliverPolicy
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.routing import RECORDER
from workers.runtime.bus import Bus, Consumer, Delivery
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog, Record
from workers.runtime.service import Worker, lower_cpu_priority
from workers.runtime.streams import Lag, recorder_lag

log = logging.getLogger("voicebus.recorder")
RETRY_S = 0.5
RETRY_MAX_S = 10.0


def retry_delay(num_delivered: int) -> float:
    """Doubling from RETRY_S up to RETRY_MAX_S: a long outage costs one try every 10 s."""
    return min(RETRY_MAX_S, RETRY_S * 2 ** min(max(0, num_delivered - 1), 8))


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
    nice: int = Field(default=10, ge=0, le=19)
    """RECORDER_NICE: CPU niceness added to the recorder (when it is its own process). Nothing
    a user waits for needs it at once, and on a small machine its writes took the cores of
    turns in flight: `just bench load 1 4 --llm-parallel 4 --compare RECORDER_NICE=0` gave
    four conversations at once 1 272 ms vs 1 446 (0 = as the other workers)."""


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
        self.refused = 0
        """Events the database refused, dead-lettered."""
        self._durable = RECORDER.durable()
        self.lag: Lag | None = None
        """The last lag measured."""

    async def setup(self) -> None:
        if self.options.nice:
            lower_cpu_priority(self.options.nice)
        self.eventlog = await asyncio.to_thread(EventLog, self.settings.db_url)

    def consumers(self) -> list[Consumer]:
        consumer = self.route_consumer(
            RECORDER,
            batch_handler=self.write,
            batch=self.options.batch,
            max_ack_pending=self.options.max_ack_pending,
            ack_wait=self.options.ack_wait_s,
            deliver_policy=DeliverPolicy.ALL,
            fetch_timeout=0.25,
        )
        self._durable = consumer.durable
        return [consumer]

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
        """The consumer's batch handler: one transaction (more if an event is refused); the
        consumer acks after it."""
        assert self.eventlog is not None
        try:
            new, refused = await asyncio.to_thread(
                self.eventlog.append_or_refuse, [record_of(d) for d in deliveries]
            )
        except Exception as exc:  # transient: the database's state, not the events
            log.error(
                "batch commit failed; will retry",
                extra={"events": len(deliveries), "error": repr(exc)},
            )
            for d in deliveries:
                d.defer()  # not acked, and not counted as failed by the consumer
                await d.nak(delay=retry_delay(d.num_delivered))
            return
        for r in refused:
            await self._dead_letter(deliveries[r.index], r.reason)
        self.written += new
        self.committed += len(deliveries) - len(refused)
        log.debug(
            "batch committed",
            extra={"events": len(deliveries), "new": new, "refused": len(refused)},
        )

    async def _dead_letter(self, d: Delivery, reason: str) -> None:
        d.defer()  # acked here once the dead letter is stored, not by the consumer
        try:
            await self.bus.dead_letter(self._durable, d.msg, reason)
        except Exception as exc:  # DLQ unreachable: it comes back and is refused again
            log.error("dead-letter failed", extra={"error": repr(exc), "reason": reason})
            await d.nak(delay=retry_delay(d.num_delivered))
            return
        self.refused += 1
        await d.ack()

    async def aclose(self) -> None:
        if self.eventlog is not None:
            self.eventlog.close()
