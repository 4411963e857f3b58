"""`just bench bus`: the bus + log + tracing path vs. bare nats-py, measured in one run.

On loopback, against a nats-server this benchmark starts for itself (fsync as shipped):
1. publish throughput with acks (pipelined async publish) of 20 ms audio chunk events:
   full path (pydantic event, framing, Nats-Msg-Id, traceparent) vs. bare bytes;
2. recorder throughput into SQLite: EventLog.append in batches (direct), and through the
   bus: the recorder worker itself draining the stream into SQLite;
3. publish-to-handler latency of one 20 ms chunk at a time, p50/p99: full path (Bus.publish
   under a live span -> Consumer decode/validate/context -> handler) vs. bare
   (js.publish -> pull fetch -> callback).
Rounds alternate full/bare so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import schemas as s
from ops.bench.stats import pct
from workers.recorder.worker import Recorder
from workers.runtime.bus import Bus, Delivery
from workers.runtime.config import Settings
from workers.runtime.eventlog import EventLog, Record
from workers.runtime.natsd import NatsServer, free_port
from workers.runtime.streams import ensure_streams
from workers.runtime.telemetry import setup_telemetry, tracer

PCM_20MS = bytes(640)  # 20 ms of 16 kHz mono int16


class _CountingExporter(SpanExporter):
    """Spans are built and batched as in production; only the network send is absent."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def chunks(n: int, conv: str) -> list[s.MicAudioChunk]:
    return [
        s.MicAudioChunk(
            endpoint="device",
            conversation_id=conv,
            utterance_id=f"{conv}-u{i // 500}",
            seq=i % 500,
            audio=PCM_20MS,
        )
        for i in range(n)
    ]


async def publish_full(bus: Bus, n: int, conv: str) -> float:
    events = chunks(n, conv)
    t0 = time.perf_counter()
    with tracer("bench").start_as_current_span("utterance"):
        futs = [await bus.publish_nowait(e) for e in events]
    await asyncio.gather(*futs)
    return n / (time.perf_counter() - t0)


async def publish_bare(js, n: int, conv: str) -> float:  # type: ignore[no-untyped-def]
    body = s.encode(chunks(1, conv)[0])
    t0 = time.perf_counter()
    futs = [
        await js.publish_async(
            f"voice.device.{conv}.mic.audio-chunk", body, headers={"Nats-Msg-Id": f"{conv}-{i}"}
        )
        for i in range(n)
    ]
    await asyncio.gather(*futs)
    return n / (time.perf_counter() - t0)


def log_direct(db: Path, n: int) -> float:
    log = EventLog(f"sqlite:///{db}")
    records = [Record.of(e) for e in chunks(n, "direct")]
    t0 = time.perf_counter()
    for i in range(0, n, 256):
        log.append(records[i : i + 256])
    rate = n / (time.perf_counter() - t0)
    log.close()
    return rate


async def fill_stream(bus: Bus, n: int) -> int:
    """n more chunk events in the stream; returns how many events it holds in all."""
    events = chunks(n, "viabus")
    for i in range(0, n, 1000):
        await asyncio.gather(*[await bus.publish_nowait(e) for e in events[i : i + 1000]])
    return (await bus.js.stream_info(bus.stream)).state.messages


async def record_worker(bus: Bus, settings: Settings, db: Path, total: int) -> float:
    """The whole stream -> the recorder worker itself -> SQLite."""
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await bus.js.delete_consumer(bus.stream, "recorder")  # start from the first event
    recorder = Recorder(bus, settings.model_copy(update={"database_url": f"sqlite:///{db}"}))
    await recorder.setup()
    t0 = time.perf_counter()
    task = asyncio.create_task(recorder.run())
    while recorder.committed < total and not task.done():  # noqa: ASYNC110 (a counter)
        await asyncio.sleep(0.002)
    rate = recorder.committed / (time.perf_counter() - t0)
    recorder.stop()
    await task
    return rate


async def latency_full(bus: Bus, n: int, conv: str) -> list[float]:
    sent: dict[str, float] = {}
    lat: list[float] = []
    got = asyncio.Event()

    async def handle(event: s.Event, d: Delivery) -> None:
        lat.append((time.perf_counter() - sent[event.event_id]) * 1000)
        got.set()

    consumer = await bus.consumer(
        f"lat-{conv}", [s.subject_filter("*", conv)], handle, batch=64, fetch_timeout=5.0
    ).start()
    runner = asyncio.create_task(consumer.run())
    await asyncio.sleep(0.05)
    with tracer("bench").start_as_current_span("utterance"):
        for e in chunks(n, conv):
            got.clear()
            sent[e.event_id] = time.perf_counter()
            await bus.publish(e)
            await got.wait()
    consumer.stop()
    await runner
    return lat


async def latency_bare(js, n: int, conv: str) -> list[float]:  # type: ignore[no-untyped-def]
    subject = f"voice.device.{conv}.mic.audio-chunk"
    await js.add_consumer(
        "VOICE",
        ConsumerConfig(
            durable_name=f"lat-{conv}",
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,
        ),
    )
    sub = await js.pull_subscribe_bind(f"lat-{conv}", stream="VOICE")
    body = s.encode(chunks(1, conv)[0])
    lat: list[float] = []
    got = asyncio.Event()
    sent: dict[str, float] = {}
    stop = False

    async def pull() -> None:
        while not stop:
            try:
                msgs = await sub.fetch(64, timeout=5.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for m in msgs:
                lat.append((time.perf_counter() - sent[m.headers["Nats-Msg-Id"]]) * 1000)
                await m.ack()
                got.set()

    task = asyncio.create_task(pull())
    await asyncio.sleep(0.05)
    for i in range(n):
        got.clear()
        mid = f"{conv}-{i}"
        sent[mid] = time.perf_counter()
        await js.publish(subject, body, headers={"Nats-Msg-Id": mid})
        await got.wait()
    stop = True
    await sub.unsubscribe()
    task.cancel()
    return lat


async def run(args: argparse.Namespace) -> dict:
    exporter = _CountingExporter()
    setup_telemetry("bench-bus", [BatchSpanProcessor(exporter)])
    work = Path(tempfile.mkdtemp(prefix="bench-bus-"))
    server = NatsServer(free_port(), work / "nats", sync_interval=args.sync).start()
    try:
        settings = Settings(nats_url=server.url, _env_file=None)  # type: ignore[call-arg]
        bus = await Bus.connect(settings, "bench")
        await ensure_streams(bus)
        bare_nc = await nats.connect(server.url)
        bare_js = bare_nc.jetstream()
        # First, while the stream holds only these events (the bare rounds below publish
        # forged ids, which the recorder would dead-letter).
        print("recorder into SQLite", file=sys.stderr)
        direct = log_direct(work / "direct.db", args.n)
        total = await fill_stream(bus, args.n)
        via_bus = [  # each from the stream's first event into a new file
            await record_worker(bus, settings, work / f"rec{r}.db", total) for r in range(2)
        ]
        pub_full, pub_bare, lat_full, lat_bare = [], [], [], []
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}: publish", file=sys.stderr)
            pub_full.append(await publish_full(bus, args.n, f"pf{r}"))
            pub_bare.append(await publish_bare(bare_js, args.n, f"pb{r}"))
            print(f"round {r + 1}/{args.rounds}: latency", file=sys.stderr)
            lat_bare += await latency_bare(bare_js, args.latency_n, f"lb{r}")
            lat_full += await latency_full(bus, args.latency_n, f"lf{r}")
        await bare_nc.close()
        await bus.close()
    finally:
        server.stop()
    res = {
        "publish_acked_events_per_s": {
            "full": statistics.median(pub_full),
            "bare": statistics.median(pub_bare),
        },
        "recorder_events_per_s": {
            "direct_append": direct,
            "recorder_worker": statistics.median(via_bus),
        },
        "chunk_latency_ms": {
            "full": {"p50": pct(lat_full, 0.5), "p99": pct(lat_full, 0.99)},
            "bare": {"p50": pct(lat_bare, 0.5), "p99": pct(lat_bare, 0.99)},
        },
        "spans_exported": exporter.spans,
        "nats_sync_interval": args.sync,
    }
    res["ratios"] = {
        "publish_throughput_bare_over_full": res["publish_acked_events_per_s"]["bare"]
        / res["publish_acked_events_per_s"]["full"],
        "latency_p50_full_over_bare": res["chunk_latency_ms"]["full"]["p50"]
        / res["chunk_latency_ms"]["bare"]["p50"],
        "latency_p99_full_over_bare": res["chunk_latency_ms"]["full"]["p99"]
        / res["chunk_latency_ms"]["bare"]["p99"],
    }
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="just bench bus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, default=5000, help="events per throughput round")
    p.add_argument("--latency-n", type=int, default=500, help="chunks per latency round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sync", default="1s", help="nats-server sync_interval (as shipped: 1s)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    res = asyncio.run(run(args))
    pa, lat, rec, ra = (
        res["publish_acked_events_per_s"],
        res["chunk_latency_ms"],
        res["recorder_events_per_s"],
        res["ratios"],
    )
    print(f"{'':38}{'full path':>12}{'bare nats-py':>14}{'ratio':>8}")
    print(
        f"{'publish with acks (events/s)':38}{pa['full']:>12.0f}{pa['bare']:>14.0f}"
        f"{ra['publish_throughput_bare_over_full']:>7.2f}x"
    )
    print(
        f"{'20 ms chunk latency p50 (ms)':38}{lat['full']['p50']:>12.3f}"
        f"{lat['bare']['p50']:>14.3f}{ra['latency_p50_full_over_bare']:>7.2f}x"
    )
    print(
        f"{'20 ms chunk latency p99 (ms)':38}{lat['full']['p99']:>12.3f}"
        f"{lat['bare']['p99']:>14.3f}{ra['latency_p99_full_over_bare']:>7.2f}x"
    )
    print(
        f"recorder into SQLite (events/s): EventLog.append alone {rec['direct_append']:.0f}; "
        f"stream -> recorder worker -> SQLite {rec['recorder_worker']:.0f}"
    )
    ok_p99 = lat["full"]["p99"] < 2.0
    ok_ratio = max(ra.values()) <= 2.0
    print(
        f"targets: p99 < 2 ms: {'met' if ok_p99 else 'MISSED'}; "
        f"full path within 2x of bare: {'met' if ok_ratio else 'MISSED'}"
    )
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
