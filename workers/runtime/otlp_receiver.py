"""A tiny OTLP/HTTP trace receiver (protobuf or JSON on POST /v1/traces).

For tests and for machines without Jaeger: collects spans in memory and can write them as
a Jaeger-UI-loadable JSON file. Not a collector: no batching, no retries, one process.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def spans_of(req: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    out = []
    for rs in req.resource_spans:
        attrs = {a.key: _value(a.value) for a in rs.resource.attributes}
        service = str(attrs.get("service.name", ""))
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    ReceivedSpan(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(),
                        name=s.name,
                        service=service,
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        attributes={a.key: _value(a.value) for a in s.attributes},
                    )
                )
    return out


class OtlpReceiver:
    """`with OtlpReceiver() as r:` then point OTEL_EXPORTER_OTLP_ENDPOINT at `r.endpoint`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                req = ExportTraceServiceRequest()
                if "json" in (self.headers.get("Content-Type") or ""):
                    Parse(body, req)
                else:
                    req.ParseFromString(body)
                with receiver._lock:
                    receiver.spans.extend(spans_of(req))
                data = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)


def jaeger_json(spans: list[ReceivedSpan]) -> dict[str, Any]:
    """Spans in the JSON shape Jaeger's UI accepts under "JSON File" upload."""
    traces: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        traces.setdefault(s.trace_id, []).append(s)
    data = []
    for trace_id, group in traces.items():
        services = sorted({s.service for s in group})
        pid = {svc: f"p{i + 1}" for i, svc in enumerate(services)}
        data.append(
            {
                "traceID": trace_id,
                "spans": [
                    {
                        "traceID": trace_id,
                        "spanID": s.span_id,
                        "operationName": s.name,
                        "references": (
                            [
                                {
                                    "refType": "CHILD_OF",
                                    "traceID": trace_id,
                                    "spanID": s.parent_span_id,
                                }
                            ]
                            if s.parent_span_id
                            else []
                        ),
                        "startTime": s.start_ns // 1000,
                        "duration": max(0, (s.end_ns - s.start_ns) // 1000),
                        "tags": [
                            {"key": k, "type": "string", "value": str(v)}
                            for k, v in s.attributes.items()
                        ],
                        "logs": [],
                        "processID": pid[s.service],
                        "warnings": None,
                    }
                    for s in group
                ],
                "processes": {pid[svc]: {"serviceName": svc, "tags": []} for svc in services},
                "warnings": None,
            }
        )
    return {"data": data}


def dump_jaeger_json(spans: list[ReceivedSpan], path: str) -> None:
    with open(path, "w") as f:
        json.dump(jaeger_json(spans), f, indent=1)
