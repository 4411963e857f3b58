"""OpenTelemetry: one setup per worker process, W3C trace context through NATS headers.

Exports OTLP/HTTP only when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set,
e.g. http://localhost:4318 for Jaeger; otherwise spans are created (cheaply) and dropped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanProcessor

_provider: TracerProvider | None = None


def setup_telemetry(
    service_name: str,
    extra_processors: list[SpanProcessor] | None = None,
) -> TracerProvider:
    """Install the process' tracer provider (idempotent: a second call adds processors only)."""
    global _provider
    if _provider is None:
        _provider = TracerProvider(
            resource=Resource.create(
                {"service.name": service_name, "service.namespace": "voicebus"}
            )
        )
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        ):
            # Imported lazily: the exporter pulls in requests/protobuf, unused otherwise.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(_provider)
    for p in extra_processors or ():
        _provider.add_span_processor(p)
    return _provider


def add_exporter(exporter: SpanExporter) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    setup_telemetry("voicebus").add_span_processor(SimpleSpanProcessor(exporter))


def shutdown_telemetry() -> None:
    """Flush pending spans (on SIGTERM/exit)."""
    if _provider is not None:
        _provider.force_flush(5000)
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers(
    headers: MutableMapping[str, str], ctx: otel_context.Context | None = None
) -> None:
    """Write traceparent/tracestate of `ctx` (default: current) into NATS headers."""
    propagate.inject(headers, context=ctx)


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(headers or {})


def traceparent_of(ctx: otel_context.Context | None = None) -> str:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    return carrier.get("traceparent", "")


def trace_id_of(traceparent: str) -> str:
    """The 32-hex trace id inside a traceparent header ('' if none)."""
    parts = traceparent.split("-")
    return parts[1] if len(parts) >= 4 else ""
