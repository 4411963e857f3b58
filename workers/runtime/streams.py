"""Stream configuration has one owner: this set-up step (`just nats-setup`).

It creates or updates the VOICE stream (voice.> events) and VOICE_DLQ (dead letters) with
the operator's credentials; `just up`, `just demo` and the other tools run it before they
start workers, and so do the test fixtures. Workers never change a stream: at start they
only check that it exists (`require_streams`) and stop with a one-line error if it does not,
so no worker can shrink retention and the last one started no longer decides the settings.

STREAM_REPLICAS (default 1) is the number of copies JetStream keeps: 1 on a single server,
3 on a cluster.
"""

from __future__ import annotations

import asyncio
import sys

import nats.errors
import nats.js.errors
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from schemas import DLQ_ROOT, SUBJECT_ROOT
from workers.runtime.bus import DLQ_STREAM, Bus, BusError, retry_transient
from workers.runtime.config import Settings, get_settings

#: JetStream's error code for "stream name already in use with a different configuration".
STREAM_NAME_IN_USE = 10058


def voice_stream(s: Settings) -> StreamConfig:
    return StreamConfig(
        name=s.stream_name,
        description="voice pipeline events; the SQLite/Postgres log is the record",
        subjects=[f"{SUBJECT_ROOT}.>"],
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
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


async def setup(settings: Settings | None = None) -> list[str]:
    """Connect as the operator and apply the stream settings; returns the stream names."""
    settings = settings or get_settings()
    bus = await Bus.connect(settings, name="nats-setup")
    try:
        await ensure_streams(bus)
    finally:
        await bus.close()
    return [c.name or "" for c in stream_configs(settings)]


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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
