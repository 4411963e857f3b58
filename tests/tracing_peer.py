"""A separate process for the cross-process tracing test: produce or consume one event."""

from __future__ import annotations

import asyncio
import sys

from nats.js.api import DeliverPolicy

import schemas as s
from workers.runtime.bus import Bus
from workers.runtime.config import Settings
from workers.runtime.streams import ensure_streams
from workers.runtime.telemetry import setup_telemetry, shutdown_telemetry, tracer


async def produce(settings: Settings) -> None:
    bus = await Bus.connect(settings, "peer-produce")
    await ensure_streams(bus)
    with tracer("peer").start_as_current_span("utterance"):
        await bus.publish(
            s.VoiceStarted(endpoint="device", conversation_id="tr", utterance_id="u1")
        )
    await bus.close()


async def consume(settings: Settings) -> None:
    bus = await Bus.connect(settings, "peer-consume")
    await ensure_streams(bus)
    done = asyncio.Event()

    async def handle(event: s.Event, d: object) -> None:
        with tracer("peer").start_as_current_span("stt.final"):
            pass
        done.set()

    consumer = await bus.consumer(
        "peer", [s.subject_filter()], handle, deliver_policy=DeliverPolicy.ALL
    ).start()
    while not done.is_set():
        await consumer.run_once()
    await consumer.close()
    await bus.close()


if __name__ == "__main__":
    mode, url = sys.argv[1], sys.argv[2]
    setup_telemetry(f"peer-{mode}")
    settings = Settings(nats_url=url, _env_file=None)  # type: ignore[call-arg]
    asyncio.run(produce(settings) if mode == "produce" else consume(settings))
    shutdown_telemetry()
