"""X-Request-ID: one id a client can quote to support, on the response and on every log line.

A client's own id is kept when it is well-formed (1-128 of `A-Z a-z 0-9 . _ -`), so a caller can
follow one request across its own logs and ours; anything else is replaced by a fresh random id,
never echoed (a header value is attacker-controlled text that would land in our logs). The id sits
beside the trace id: the trace id is for tracing tools, the request id is the one people quote.
"""

import os
import re
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bound_contextvars

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode()
_WELL_FORMED = re.compile(r"[A-Za-z0-9._-]{1,128}")
_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being answered (None outside one)."""
    return _current.get()


def _given(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == _HEADER_KEY:
            text = value.decode("latin-1")
            return text if _WELL_FORMED.fullmatch(text) else None
    return None


class RequestIds:
    """Give each HTTP request an id: on its response headers, its log lines and its problems."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _given(scope) or os.urandom(16).hex()
        header = (_HEADER_KEY, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = _current.set(request_id)
        try:
            with bound_contextvars(request_id=request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
