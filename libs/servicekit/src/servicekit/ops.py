"""The ops endpoint every process serves on ``OPS_PORT``: metrics, health, readiness, AsyncAPI.

``/metrics``, ``/healthz``, ``/readyz``, and ``/asyncapi.json``: the process's AsyncAPI document
(:mod:`servicekit.asyncapi`), when the process gives one. It listens on ``OPS_HOST`` (all
interfaces by default, for scrapes from other containers); ``/readyz`` results are cached for a
second and name a failed dependency, never the exception; a request head over 16 KiB gets 431.

A deliberately tiny HTTP/1.1 server on asyncio's streams: four GET routes need no framework, and
running it inside the service's own event loop means it shares the process's signal handling and
shuts down with it (uvicorn's embedded server installs its own signal handlers).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import (
    CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE,
)
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from servicekit.logs import get_logger
from servicekit.metrics import CONTENT_TYPE_LATEST, render_metrics

__all__ = ["OpsServer", "Readiness", "ReadinessCheck"]

_log = get_logger("servicekit.ops")

MAX_REQUEST_HEAD_BYTES = 16 * 1024
"""The ops routes take no body and need no large header; a longer head is answered 431."""

ReadinessCheck = Callable[[], Awaitable[object]]
"""An async callable that raises (or times out) when its dependency is unavailable."""


@dataclass
class Readiness:
    """The named checks behind ``/readyz`` plus a latch that the process can trip.

    ``fail(reason)`` makes the process report not-ready for good (for example when its consumer
    group vanished) so an orchestrator replaces it instead of leaving it running green.

    Results are kept for ``cache_seconds``: probes from several orchestrators (or anyone who can
    reach the port) then cost at most one run of the checks per interval, and concurrent probes
    share that run. A failed check shows only ``"unavailable"``; its exception is logged.
    """

    checks: Mapping[str, ReadinessCheck] = field(default_factory=dict)
    timeout: float = 1.0
    failed_reason: str | None = None
    # What an operator should know that does not make the process unready, e.g. the outbox's
    # durability on a Redis without AOF. Each returns a line, or None while it does not know yet.
    facts: Mapping[str, Callable[[], str | None]] = field(default_factory=dict)
    cache_seconds: float = 1.0
    _outcome: dict[str, str] | None = field(default=None, init=False, repr=False)
    _checked_at: float = field(default=0.0, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def known_facts(self) -> dict[str, str]:
        """The facts that have a value now."""
        known = {name: fact() for name, fact in self.facts.items()}
        return {name: value for name, value in known.items() if value is not None}

    def fail(self, reason: str) -> None:
        """Latch not-ready with ``reason``."""
        self.failed_reason = reason

    async def evaluate(self) -> tuple[bool, dict[str, str]]:
        """Return (ready, per-check outcome), running the checks at most once per cache interval."""
        async with self._lock:
            if self._outcome is None or time.monotonic() - self._checked_at >= self.cache_seconds:
                self._outcome = await self._run_checks()
                self._checked_at = time.monotonic()
        outcome = dict(self._outcome)
        if self.failed_reason is not None:
            outcome["process"] = f"error: {self.failed_reason}"
        return all(v == "ok" for v in outcome.values()), outcome

    async def _run_checks(self) -> dict[str, str]:
        names = list(self.checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(self.checks[n](), self.timeout) for n in names),
            return_exceptions=True,
        )
        outcome = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                # The port is often reachable by more than the orchestrator: the body names the
                # dependency only; the why (class, message) goes to the log.
                _log.warning("ops.readiness_check_failed", check=name, error=repr(result))
                outcome[name] = "unavailable"
            else:
                outcome[name] = "ok"
        return outcome


class OpsServer:
    """Serve metrics, liveness and readiness for one process."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        readiness: Readiness,
        host: str = "0.0.0.0",  # noqa: S104 - scraped from other containers
        port: int = 9100,
        asyncapi: Callable[[], bytes] | None = None,
    ) -> None:
        """``asyncapi`` builds the ``/asyncapi.json`` body; called once, on the first request.

        It runs in a thread: the first call imports FastStream (about half a second of CPU),
        which is why it is not built at start, and the event loop keeps serving meanwhile.
        """
        self.registry = registry
        self.readiness = readiness
        self.host = host
        self.port = port
        self._asyncapi = asyncapi
        self._asyncapi_body: bytes | None = None
        self._asyncapi_lock = asyncio.Lock()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Start listening (port 0 picks a free port; read it back from ``port``)."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_REQUEST_HEAD_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def __aenter__(self) -> OpsServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            except asyncio.LimitOverrunError:
                await _refuse_oversized(reader, writer)
                return
            request_line, _, header_block = request.decode("latin-1").partition("\r\n")
            method, path, *_ = [*request_line.split(" "), "", ""][:3]
            accept = ""
            for line in header_block.split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "accept":
                    accept = value
            status, content_type, body = await self._route(method, path.split("?")[0], accept)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(self, method: str, path: str, accept: str) -> tuple[str, str, bytes]:
        if method not in {"GET", "HEAD"}:
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        if path == "/metrics":
            if "application/openmetrics-text" in accept:
                # OpenMetrics is the format that carries exemplars (trace ids on histograms).
                metrics: bytes = generate_openmetrics(self.registry)  # type: ignore[no-untyped-call]
                return "200 OK", OPENMETRICS_CONTENT_TYPE, metrics
            return "200 OK", CONTENT_TYPE_LATEST, render_metrics(self.registry)
        if path == "/healthz":
            return "200 OK", "application/json", b'{"status":"ok"}'
        if path == "/readyz":
            ready, checks = await self.readiness.evaluate()
            document: dict[str, object] = {
                "status": "ready" if ready else "not ready",
                "checks": checks,
            }
            facts = self.readiness.known_facts()
            if facts:
                document["facts"] = facts
            body = json.dumps(document)
            status = "200 OK" if ready else "503 Service Unavailable"
            return status, "application/json", body.encode()
        if path == "/asyncapi.json" and self._asyncapi is not None:
            return await self._asyncapi_document(self._asyncapi)
        return "404 Not Found", "text/plain", b"not found\n"

    async def _asyncapi_document(self, build: Callable[[], bytes]) -> tuple[str, str, bytes]:
        async with self._asyncapi_lock:
            if self._asyncapi_body is None:
                try:
                    self._asyncapi_body = await asyncio.to_thread(build)
                except Exception as exc:
                    _log.exception("ops.asyncapi_failed")
                    body = f"asyncapi document failed: {type(exc).__name__}\n".encode()
                    return "500 Internal Server Error", "text/plain", body
            return "200 OK", "application/json", self._asyncapi_body


async def _refuse_oversized(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    body = b"request header fields too large\n"
    writer.write(
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    if writer.can_write_eof():
        writer.write_eof()
    # Read and drop the rest for a moment: closing with unread input resets the connection,
    # and the client could lose the answer with it.
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.wait_for(_discard(reader), 1.0)


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass
