"""The HTTP server of `notes-api serve`: uvicorn with the connection limits it lacks.

uvicorn bounds the idle time between keep-alive requests, but nothing before a connection's first
request, nor the time to receive a request's headers or body, nor their size (with httptools), nor
the time a response may sit unread in memory; and `limit_concurrency` answers 503 to the *real*
client once idle sockets fill it. `GuardedProtocol` adds those limits to uvicorn's httptools
protocol, and `ConnectionGuard` keeps the deadlines and the connection cap for all connections:
one sweep timer for the process instead of timers per request, so a request pays two attribute
writes. Answers of the server itself (400, 408, 431, 503) are problem+json, like the API's.

The limits are documented in docs/api.md, "Connection and request limits".
"""

import asyncio
import contextlib
import json
import resource
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from notes_api.settings import NotesApiSettings
from servicekit import get_logger

__all__ = ["ConnectionGuard", "ConnectionLimits", "GuardedProtocol", "build_server"]

_log = get_logger("notes_api.server")

LINGER_SECONDS = 2.0
"""After a refusal, input is read and dropped this long before the socket is reset, so the client
reads the answer instead of losing it to a reset (what nginx calls a lingering close)."""


@dataclass(frozen=True)
class ConnectionLimits:
    """What one serve process allows a connection (see the settings of the same names)."""

    receive_timeout: float
    write_timeout: float
    max_header_bytes: int
    max_connections: int

    @classmethod
    def from_settings(cls, settings: NotesApiSettings) -> "ConnectionLimits":
        """The limits from settings.

        The connection cap defaults to the descriptor limit less a reserve, so that the database
        pool, Redis and the ops port still get descriptors when sockets pile up.
        """
        cap = settings.http_max_connections or descriptor_budget(settings.http_descriptor_reserve)
        return cls(
            receive_timeout=settings.http_receive_timeout_seconds,
            write_timeout=settings.http_write_timeout_seconds,
            max_header_bytes=settings.http_max_header_bytes,
            max_connections=cap,
        )


def descriptor_budget(reserve: int) -> int:
    """The soft RLIMIT_NOFILE less ``reserve`` (at least 16)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, soft - reserve)


class ConnectionGuard:
    """The live connections of one server: the cap, the receive and write deadlines.

    Deadlines are checked by one sweep that runs while any connection is open, at a quarter of
    the shortest deadline (at most once a second), so a connection overstays by at most that.
    """

    def __init__(self, limits: ConnectionLimits, registry: CollectorRegistry | None) -> None:
        self.limits = limits
        self._connections: dict[GuardedProtocol, None] = {}  # insertion order: oldest first
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_every = min(1.0, limits.receive_timeout / 4, limits.write_timeout / 4)
        self._dropped = Counter(
            "notes_api_http_connections_dropped",
            "HTTP connections the server closed or refused, by reason",
            ["reason"],
            registry=registry,
        )

    def __len__(self) -> int:
        return len(self._connections)

    def admit(self, connection: "GuardedProtocol") -> bool:
        """Register ``connection``; at the cap, shed the oldest one not yet worth keeping.

        That is a connection still receiving its request, or idle (`is_sheddable`): an idle or
        trickling socket costs an attacker nothing, a real client sends its request at once, so
        the newest connection is the one most likely to be useful. False when none could be shed.
        """
        if len(self._connections) >= self.limits.max_connections:
            victim = next((c for c in self._connections if c.is_sheddable()), None)
            if victim is None:
                self._dropped.labels("connection_cap_busy").inc()
                return False
            self.forget(victim)
            victim.transport.abort()
            self._dropped.labels("connection_cap").inc()
        self._connections[connection] = None
        if self._sweep is None:
            self._schedule(connection.loop)
        return True

    def forget(self, connection: "GuardedProtocol") -> None:
        """Unregister ``connection`` (it closed)."""
        self._connections.pop(connection, None)

    def count(self, reason: str) -> None:
        """Count a connection the server closed for ``reason``."""
        self._dropped.labels(reason).inc()

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep = loop.call_later(self._sweep_every, self._run_sweep, loop)

    def _run_sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sweep(loop.time())
        self._sweep = None
        if self._connections:
            self._schedule(loop)

    def sweep(self, now: float) -> None:
        """Close every connection past its receive deadline or stuck writing past its deadline."""
        for connection in list(self._connections):
            since = connection.receiving_since
            if since is not None and now - since > self.limits.receive_timeout:
                self.forget(connection)
                self.count("receive_timeout")
                connection.receive_timed_out()
                continue
            if connection.write_stalled_since is not None:
                pending = connection.transport.get_write_buffer_size()
                if pending < connection.write_mark:  # draining, slowly: a new deadline
                    connection.write_mark, connection.write_stalled_since = pending, now
                elif now - connection.write_stalled_since > self.limits.write_timeout:
                    self.forget(connection)
                    self.count("write_timeout")
                    connection.transport.abort()  # drops the unsent bytes; close() would keep them


class HeadTooLargeError(Exception):
    """Raised inside the parser's callback; uvicorn turns parser errors into `send_400_response`."""


def problem_bytes(
    status: int, detail: str, default_headers: list[tuple[bytes, bytes]], extra: bytes = b""
) -> bytes:
    """A complete `Connection: close` response with an RFC 9457 problem body."""
    phrase = HTTPStatus(status).phrase
    body = json.dumps(
        {"type": "about:blank", "title": phrase, "status": status, "detail": detail}
    ).encode()
    head = [f"HTTP/1.1 {status} {phrase}\r\n".encode()]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head.append(b"content-type: application/problem+json\r\n")
    head.append(b"content-length: %d\r\nconnection: close\r\n" % len(body))
    return b"".join(head) + extra + b"\r\n" + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size limit, deadlines and the connection cap.

    ``guard`` is set on the subclass `build_server` makes for one server.
    """

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.receiving_since: float | None = None  # a request (or the first) is arriving
        self.head_bytes: int | None = 0  # bytes since the current request's head began
        self.write_stalled_since: float | None = None
        self.write_mark = 0
        self._refused = False
        self._refusal: tuple[int, str] | None = None

    def is_sheddable(self) -> bool:
        """Still receiving its request (or none yet), or idle with nothing left to send.

        Closing it loses no work the server has taken on: a request is worked on, and holds a
        connection worth keeping, only once it has fully arrived.
        """
        if self.receiving_since is not None:
            return True
        cycle = self.cycle
        idle = cycle is None or cycle.response_complete
        return idle and self.transport.get_write_buffer_size() == 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.receiving_since = self.loop.time()
        if not self.guard.admit(self):
            self.refuse(503, "The server is at its connection limit; retry shortly.")

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: read and drop
        if self.receiving_since is None:
            self.receiving_since = self.loop.time()
        if self.head_bytes is not None:
            self.head_bytes += len(data)
        super().data_received(data)
        # Still inside the head: everything since it began is head (one huge header line would
        # otherwise be buffered by the parser to any size).
        if self.head_bytes is not None and self.head_bytes > self.guard.limits.max_header_bytes:
            self.refuse_head()

    def on_headers_complete(self) -> None:
        # head_bytes may count body bytes that came in the same read; measure exactly only then.
        if self.head_bytes is not None and self.head_bytes > self.guard.limits.max_header_bytes:
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > self.guard.limits.max_header_bytes:
                self._refusal = (431, self._head_detail())
                raise HeadTooLargeError
        self.head_bytes = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.receiving_since = None
        self.head_bytes = 0

    def pause_writing(self) -> None:
        super().pause_writing()
        self.write_stalled_since = self.loop.time()
        self.write_mark = self.transport.get_write_buffer_size()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.write_stalled_since = None

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer to a parse error; ours when a callback raised to stop the parser.
        status, detail = self._refusal or (400, msg)
        if status == 431:
            self.guard.count("header_too_large")
        self.refuse(status, detail)

    def receive_timed_out(self) -> None:
        """The request did not arrive in time: 408 if nothing is being answered, else close."""
        if self.cycle is None or self.cycle.response_complete:
            self.refuse(408, "The request did not arrive within the receive deadline.")
        else:
            self.transport.close()

    def refuse_head(self) -> None:
        """Answer 431 to a head over the size limit."""
        self.guard.count("header_too_large")
        self.refuse(431, self._head_detail())

    def refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` with a problem document, then close (after a lingering read)."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self.receiving_since = None
        extra = b"retry-after: 1\r\n" if status == 503 else b""
        self.transport.write(
            problem_bytes(status, detail, self.server_state.default_headers, extra)
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.abort)

    def _head_detail(self) -> str:
        limit = self.guard.limits.max_header_bytes
        return f"The request line and headers exceed {limit} bytes."


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedProtocol]:
    """A protocol class bound to ``guard`` (uvicorn instantiates the class it is given)."""
    return type("BoundGuardedProtocol", (GuardedProtocol,), {"guard": guard})


def build_server(
    app: FastAPI, settings: NotesApiSettings, registry: CollectorRegistry | None = None
) -> uvicorn.Server:
    """A uvicorn server for ``app`` with the connection limits of ``settings``.

    It does not install signal handlers: `cli.serve` owns them (so SIGTERM drains and exits 0).
    """
    guard = ConnectionGuard(ConnectionLimits.from_settings(settings), registry)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False,
        http=guarded_protocol(guard),
        timeout_keep_alive=settings.http_keepalive_timeout_seconds,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )  # fmt: skip
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    _log.debug("server.limits", **vars(guard.limits))
    return server
