"""An OTLP/HTTP receiver: the spans services export through their real exporter, kept in memory.

Services get ``OTEL_EXPORTER_OTLP_ENDPOINT=<endpoint>`` (protocol http/protobuf, servicekit's
default) and POST ``ExportTraceServiceRequest`` protobufs to ``/v1/traces``; they are decoded with
``opentelemetry-proto`` (the message types the exporter itself encodes with).
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["OtlpReceiver", "ReceivedSpan"]

T = TypeVar("T")


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, ids as lowercase hex (``parent_span_id`` None for a root span)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    service: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind (2 server, 4 producer, 5 consumer)
    start_ns: int
    end_ns: int
    links: tuple[tuple[str, str], ...]  # (trace id, span id) of each link
    attributes: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.service}:{self.name}({self.span_id}<-{self.parent_span_id})"


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one ``ExportTraceServiceRequest``."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    found = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        service=service,
                        kind=span.kind,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        links=tuple((ln.trace_id.hex(), ln.span_id.hex()) for ln in span.links),
                        attributes={a.key: _value(a.value) for a in span.attributes},
                    )
                )
    return found


class OtlpReceiver:
    """An HTTP server on a free port of 127.0.0.1 that stores every span posted to it.

    Use as a context manager (or call ``close()``).
    """

    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                try:
                    spans = decode(body)
                except Exception:  # a malformed body is the exporter's bug: say so, keep serving
                    self.send_error(400, "not an ExportTraceServiceRequest")
                    return
                receiver._add(spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per export would drown the test output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """The base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter adds ``/v1/traces``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)
            self.requests += 1

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        """Every span received so far (of ``trace_id`` only, if given), in arrival order."""
        with self._lock:
            return [s for s in self._spans if trace_id is None or s.trace_id == trace_id]

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], T], within: float = 30.0) -> T:
        """Poll ``predicate(spans())`` until truthy and return its value; fail with what arrived."""
        deadline = time.monotonic() + within
        while True:
            value = predicate(self.spans())
            if value:
                return value
            if time.monotonic() > deadline:
                seen = ", ".join(str(s) for s in self.spans()[-30:])
                msg = f"spans did not match within {within} s; last received: {seen or 'none'}"
                raise AssertionError(msg)
            time.sleep(0.05)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
