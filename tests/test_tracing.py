"""One utterance is one trace: context crosses processes in NATS headers."""

from __future__ import annotations

import os
import subprocess
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import schemas as s
from tests.conftest import ROOT
from workers.runtime.bus import Bus, Delivery
from workers.runtime.natsd import NatsServer
from workers.runtime.otlp_receiver import OtlpReceiver, jaeger_json


def run_peer(mode: str, nats_url: str, endpoint: str) -> None:
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "tracing_peer.py"), mode, nats_url],
        env=env,
        check=True,
        timeout=60,
        cwd=ROOT,
    )


def test_a_trace_started_in_one_process_continues_in_another(nats_server: NatsServer) -> None:
    with OtlpReceiver() as receiver:
        run_peer("produce", nats_server.url, receiver.endpoint)
        run_peer("consume", nats_server.url, receiver.endpoint)
        spans = {sp.name: sp for sp in receiver.snapshot()}
    root, child = spans["utterance"], spans["stt.final"]
    assert root.service == "peer-produce" and child.service == "peer-consume"
    assert child.trace_id == root.trace_id
    assert child.parent_span_id == root.span_id
    assert root.parent_span_id == ""
    # The same spans convert to a Jaeger-UI-loadable file.
    (trace_doc,) = jaeger_json([root, child])["data"]
    assert len(trace_doc["spans"]) == 2 and len(trace_doc["processes"]) == 2


async def test_handler_runs_inside_the_producers_trace_context(bus: Bus) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tr = provider.get_tracer("test")
    seen: list[Delivery] = []

    async def handle(event: s.Event, d: Delivery) -> None:
        with tr.start_as_current_span("handler"):
            seen.append(d)

    consumer = await bus.consumer("ctx", [s.subject_filter()], handle).start()
    with tr.start_as_current_span("producer") as producer:
        await bus.publish(s.VoiceStarted(endpoint="device", conversation_id="c", utterance_id="u"))
    while not seen:
        await consumer.run_once()
    handler = next(sp for sp in exporter.get_finished_spans() if sp.name == "handler")
    assert handler.context.trace_id == producer.get_span_context().trace_id
    assert handler.parent is not None
    assert handler.parent.span_id == producer.get_span_context().span_id
    assert trace.get_current_span() is trace.INVALID_SPAN  # context detached after the handler
