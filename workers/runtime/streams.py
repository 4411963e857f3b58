"""Stream configuration has one owner: this set-up step (`just nats-setup`).

It creates or updates the VOICE stream (voice.> events) and VOICE_DLQ (dead letters) with
the operator's credentials; `just up`, `just demo` and the other tools run it before they
start workers, and so do the test fixtures. Workers never change a stream: at start they
only check that it exists (`require_streams`) and stop with a one-line error if it does not,
so no worker can shrink retention and the last one started no longer decides the settings.

STREAM_REPLICAS (default 1) is the number of copies JetStream keeps: 1 on a single server,
3 on a cluster.

Retention. VOICE never discards an event to make room: at STREAM_MAX_BYTES it refuses new
ones (DiscardPolicy.NEW: the publisher gets an error, nothing already stored goes away).
Events leave it only by age (STREAM_MAX_AGE_S, 7 days, recorded or not) or by `just purge`.
So an event can be lost unrecorded only if the recorder is behind for longer than that:
`recorder_lag` measures how far behind it is, and the recorder warns in its log.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from schemas import DLQ_ROOT, SUBJECT_ROOT
from workers.runtime.bus import DLQ_STREAM, Bus, BusError, retry_transient
from workers.runtime.config import Settings, get_settings

log = logging.getLogger("voicebus.streams")

#: JetStream's error code for "stream name already in use with a different configuration".
STREAM_NAME_IN_USE = 10058


def voice_stream(s: Settings) -> StreamConfig:
    return StreamConfig(
        name=s.stream_name,
        description="voice pipeline events; the SQLite/Postgres log is the record",
        subjects=[f"{SUBJECT_ROOT}.>"],
        storage=StorageType.FILE,
        # Full: refuse new events (an explicit error) rather than drop unrecorded old ones.
        discard=DiscardPolicy.NEW,
        max_age=s.stream_max_age_s,
        max_bytes=s.stream_max_bytes,
        max_msg_size=1024 * 1024,
        duplicate_window=s.stream_duplicate_window_s,
        num_replicas=s.stream_replicas,
    )


def dlq_stream(s: Settings) -> StreamConfig:
    return StreamConfig(
        name=DLQ_STREAM,
        description="dead letters: messages a consumer could not accept, with reasons",
        subjects=[f"{DLQ_ROOT}.>"],
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=30 * 24 * 3600.0,
        max_bytes=256 * 1024 * 1024,
        duplicate_window=s.stream_duplicate_window_s,
        num_replicas=s.stream_replicas,
    )


def stream_configs(s: Settings) -> list[StreamConfig]:
    return [voice_stream(s), dlq_stream(s)]


async def ensure_streams(bus: Bus) -> None:
    """Create or update every stream (idempotent); needs the operator's rights."""
    for config in stream_configs(bus.settings):
        try:
            await bus.js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            await bus.js.update_stream(config)


async def require_streams(bus: Bus) -> None:
    """What a worker does at start: the streams must exist; it never changes them."""
    for name in (bus.settings.stream_name, DLQ_STREAM):
        try:
            # On a cluster that just lost a node, the answer may take a leader election.
            await retry_transient(lambda n=name: bus.js.stream_info(n), what=f"stream {name}")
        except nats.js.errors.NotFoundError:
            raise BusError(
                f"stream {name} does not exist at {bus.settings.nats_url}: "
                "run `just nats-setup` (or `just up`) first"
            ) from None


@dataclass(frozen=True)
class Lag:
    """How far the recorder (a durable of the stream) is behind the stream."""

    events: int
    """Events it has not recorded yet (not delivered, or delivered and not acked)."""
    oldest_s: float
    """Age of the oldest of them in seconds (an upper bound; 0 when none)."""
    last_seq: int
    """The stream's last sequence."""
    recorded_seq: int
    """Every event up to this stream sequence is recorded (the durable's ack floor)."""
    fill: float
    """Stream bytes / STREAM_MAX_BYTES: at 1.0 new events are refused."""

    def warnings(self, max_age_s: float, warn_s: float, warn_fill: float) -> list[str]:
        out = []
        if self.events and self.oldest_s > warn_s:
            out.append(
                f"recorder is {self.events} events behind (stream seq {self.recorded_seq} of "
                f"{self.last_seq}); the oldest unrecorded is {self.oldest_s:.0f} s old and is "
                f"dropped unrecorded at {max_age_s:.0f} s"
            )
        if self.fill >= warn_fill:
            out.append(
                f"stream is {self.fill:.0%} full: at 100% new events are refused "
                "(raise STREAM_MAX_BYTES or run `just purge`)"
            )
        return out


async def recorder_lag(bus: Bus, durable: str) -> Lag:
    """The durable's lag behind the stream (its own consumer info and the stream info)."""
    info = await bus.js.consumer_info(bus.stream, durable)
    stream = await bus.js.stream_info(bus.stream)
    events = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
    oldest = 0.0
    if events:
        try:
            # The first message after the ack floor (any subject) is at least as old as the
            # first unrecorded one.
            msg = await bus.js.get_msg(bus.stream, seq=floor + 1, next=True)
            if msg.time is not None:
                oldest = max(0.0, time.time() - msg.time.timestamp())
        except (nats.js.errors.NotFoundError, nats.errors.Error, nats.js.errors.Error):
            pass
    cap = stream.config.max_bytes or -1
    return Lag(
        events=events,
        oldest_s=oldest,
        last_seq=int(stream.state.last_seq),
        recorded_seq=floor,
        fill=(stream.state.bytes / cap) if cap > 0 else 0.0,
    )


async def setup(settings: Settings | None = None) -> list[str]:
    """Connect as the operator and apply the stream settings; returns the stream names."""
    settings = settings or get_settings()
    bus = await Bus.connect(settings, name="nats-setup")
    try:
        await ensure_streams(bus)
    finally:
        await bus.close()
    return [c.name or "" for c in stream_configs(settings)]


async def status(settings: Settings, durable: str = "recorder") -> str:
    """One line: how full the stream is and how far the services' recorder is behind."""
    bus = await Bus.connect(settings, name="nats-setup")
    try:
        try:
            lag = await recorder_lag(bus, durable)
        except nats.js.errors.NotFoundError:
            return f"recorder {durable!r} has not started yet: nothing recorded from this stream"
    finally:
        await bus.close()
    line = (
        f"stream {settings.stream_name} {lag.fill:.0%} full; recorder {lag.events} events "
        f"behind (recorded up to seq {lag.recorded_seq} of {lag.last_seq}"
        + (f", oldest unrecorded {lag.oldest_s:.0f} s old)" if lag.events else ")")
    )
    warnings = lag.warnings(settings.stream_max_age_s, 60.0, 0.8)
    return "; ".join([line, *(f"WARNING: {w}" for w in warnings)])


def main(argv: list[str] | None = None) -> int:
    import argparse

    from workers.runtime.natsd import NatsServerError, ensure_nats

    p = argparse.ArgumentParser(
        prog="just nats-setup",
        description="Create or update the JetStream streams (starts the embedded NATS if "
        "nothing listens at NATS_URL, and stops it again).",
    )
    p.parse_args(argv)
    settings = get_settings()
    try:
        server = ensure_nats(settings)
    except NatsServerError as exc:
        print(f"nats-setup: error: {exc}", file=sys.stderr)
        return 2
    try:
        names = asyncio.run(setup(settings))
        line = asyncio.run(status(settings))
    except (BusError, nats.errors.Error, nats.js.errors.Error) as exc:
        print(f"nats-setup: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
    print(
        f"streams {', '.join(names)} set up at {settings.nats_url} "
        f"(replicas {settings.stream_replicas})"
    )
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
