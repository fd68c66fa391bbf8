"""ASGI middleware of the public app: request ids, body guard, rate limits, metrics, access log.

413/415 from the body guard, 429 from the rate limits (before routing: no database).

Pure ASGI (no BaseHTTPMiddleware) so streaming bodies are counted as they arrive.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from notes_api.auth import hash_key, well_formed
from notes_api.errors import Problem, problem_response
from notes_api.ratelimit import Limit, RateLimiter
from notes_api.request_ids import HEADER, answering, request_id_for
from servicekit import get_logger
from servicekit.metrics import observe_with_trace

_log = get_logger("notes_api.access")
_BODY_METHODS = {"POST", "PUT", "PATCH"}
_READ_METHODS = {"GET", "HEAD", "OPTIONS"}
_BULK_PATH = "/v1/notes:bulk-archive"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _json_media_type(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class BodyGuard:
    """Reject bodies over ``limit`` bytes (413) and non-JSON bodies on writes (415)."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        chunked = _header(scope, b"transfer-encoding") is not None
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            declared = None
        if declared is not None and declared > self.limit:
            await self._reject(scope, send, Problem(413, f"The body exceeds {self.limit} bytes."))
            return
        content_type = _header(scope, b"content-type")
        has_body = chunked or bool(declared)
        if has_body and not (content_type and _json_media_type(content_type)):
            problem = Problem(415, "Send JSON: `Content-Type: application/json`.")
            await self._reject(scope, send, problem)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # FastAPI re-raises HTTPException from body reading; the handler renders it.
                    raise HTTPException(413, f"The body exceeds {self.limit} bytes.")
            return message

        return counted

    async def _reject(self, scope: Scope, send: Send, problem: Problem) -> None:
        response = problem_response(problem, scope.get("path"))
        await response(scope, self._drain, send)

    @staticmethod
    async def _drain() -> Message:
        return {"type": "http.disconnect"}


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route that served the request, or that it asked for.

    A request answered before routing (429, 413, 415) has no route in its scope: it is matched
    here, on that rare path only, so it is counted under its route rather than as "unmatched".
    """
    route = scope.get("route")
    if route is None:
        partial = None
        for candidate in routes:
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                route = candidate
                break
            if match is Match.PARTIAL and partial is None:
                partial = candidate  # the path matched, the method did not (405)
        route = route or partial
    return getattr(route, "path", None) or "unmatched"


class RequestMetrics:
    """HTTP RED metrics by route template (never the raw path) and one access log line each.

    The Authorization header is never logged.
    """

    def __init__(
        self, app: ASGIApp, *, registry: CollectorRegistry, routes: Sequence[BaseRoute]
    ) -> None:
        self.app, self.routes = app, routes
        labels = ("method", "route", "status")
        self.requests = Counter(
            "http_requests_total", "HTTP requests answered.", labels, registry=registry
        )
        self.duration = Histogram(
            "http_request_duration_seconds", "Time to answer an HTTP request.",
            ("method", "route"), registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope, self.routes)
            method = scope["method"]
            self.requests.labels(method, route, str(status["code"])).inc()
            observe_with_trace(self.duration.labels(method, route), elapsed)  # Tempo link
            _log.info(
                "http.request_completed", method=method, route=route, path=scope.get("path"),
                status=status["code"], duration_ms=round(elapsed * 1000, 2),
            )  # fmt: skip


@dataclass(frozen=True)
class RouteLimits:
    """The bucket each route class draws from: reads (GET), bulk (bulk archive), writes (others)."""

    reads: Limit
    writes: Limit
    bulk: Limit

    def for_request(self, method: str, path: str) -> Limit:
        if method in _READ_METHODS:
            return self.reads
        return self.bulk if path == _BULK_PATH else self.writes


def _bearer_key(scope: Scope) -> str | None:
    authorization = _header(scope, b"authorization")
    if authorization is None:
        return None
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and well_formed(key) else None


class RateLimits:
    """Per-key limits on `/v1`, decided before routing, so a limited request costs no database.

    Keyed by the key's hash (the key is not checked yet: an unknown one spends its own bucket,
    then gets 401). A request without a well-formed key is not limited here: auth rejects it
    without any I/O. Every limited response carries `RateLimit` and `RateLimit-Policy`.
    """

    def __init__(
        self, app: ASGIApp, *, limiter: RateLimiter, limits: RouteLimits,
        registry: CollectorRegistry,
    ) -> None:  # fmt: skip
        self.app, self.limiter, self.limits = app, limiter, limits
        self.limited = Counter(
            "http_rate_limited", "Requests answered 429 by the per-key rate limits.",
            ("route_class",), registry=registry,
        )  # fmt: skip

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _bearer_key(scope) if scope["type"] == "http" else None
        if key is None or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        limit = self.limits.for_request(scope["method"], scope["path"])
        decision = await self.limiter.take(hash_key(key), limit)
        headers = decision.headers()
        if not decision.allowed:
            self.limited.labels(limit.name).inc()
            wait = decision.retry_after_seconds()
            problem = Problem(
                429, f"Too many {limit.name} for this key; retry in {wait} s.",
                headers={name.decode(): value.decode() for name, value in headers},
            )  # fmt: skip
            await problem_response(problem, scope["path"])(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestIds:
    """Give each HTTP request an id (`X-Request-ID`): on its response, log lines and problems."""

    _header = HEADER.lower().encode()

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_for(_header(scope, self._header))
        header = (self._header, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        with answering(request_id):
            await self.app(scope, receive, send_with_id)
