"""A lean HTTP/1.1 load client: keep-alive connections on raw asyncio streams.

The HTTP benchmark runs its load generator on the same two cores as the server, so the
generator's own CPU is taken from the server. httpx costs about 1.5 ms of CPU per request here
and more as its pool grows, so an overloaded server made the generator slower still, and the run
collapsed into a spiral that measured the client. This client costs a small fraction of that
(like wrk, which is not on this machine): a fixed set of connections, each carrying one request
at a time, and a request waits for a free connection when all are busy. The paced loop counts
latency from the scheduled send time, so that wait is charged to the server, as it should be.

Only what the benchmark needs: JSON bodies, `Content-Length` responses (what uvicorn sends for
JSON), no redirects, no TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any


class HttpError(Exception):
    """The connection failed or the response was not HTTP/1.1 as this client reads it."""


@dataclass(frozen=True)
class Reply:
    status_code: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


IDLE_SECONDS = 2.0
"""Connections idle longer are closed, not reused: uvicorn closes them after 5 s."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = time.monotonic()

    async def exchange(self, request: bytes) -> Reply:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        if length is None:
            raise HttpError(f"no Content-Length in the response: {head[:200]!r}")
        body = await self.reader.readexactly(length) if length else b""
        return Reply(status, body)

    def close(self) -> None:
        self.writer.close()


class LoadClient:
    """Up to ``connections`` keep-alive connections to ``host:port``; one request per connection."""

    def __init__(
        self, host: str, port: int, *, connections: int = 64, headers: dict[str, str] | None = None
    ) -> None:
        self.host, self.port = host, port
        self._limit = connections
        self._open = 0
        self._idle: asyncio.LifoQueue[_Connection] = asyncio.LifoQueue()
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._fixed += f"Host: {host}:{port}\r\n"

    async def get(self, path: str) -> Reply:
        return await self.send("GET", path)

    async def post(self, path: str, json: Any = None) -> Reply:
        return await self.send("POST", path, json)

    async def send(self, method: str, path: str, payload: Any = None) -> Reply:
        head = f"{method} {path} HTTP/1.1\r\n{self._fixed}"
        if payload is None:
            request = f"{head}\r\n".encode()
        else:
            body = json.dumps(payload).encode()
            request = (
                f"{head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
        connection = await self._take()
        try:
            reply = await connection.exchange(request)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            connection.close()
            self._open -= 1
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:  # cancelled mid-exchange: the connection's state is unknown
            connection.close()
            self._open -= 1
            raise
        connection.used = time.monotonic()
        self._idle.put_nowait(connection)
        return reply

    async def _take(self) -> _Connection:
        stale = time.monotonic() - IDLE_SECONDS
        while not self._idle.empty():
            connection = self._idle.get_nowait()
            if connection.used > stale:
                return connection
            connection.close()
            self._open -= 1
        if self._open < self._limit:
            self._open += 1
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                self._open -= 1
                raise HttpError(f"connect failed: {exc}") from exc
            return _Connection(reader, writer)
        return await self._idle.get()

    async def aclose(self) -> None:
        while not self._idle.empty():
            connection = self._idle.get_nowait()
            connection.close()
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()
        self._open = 0

    async def __aenter__(self) -> LoadClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
