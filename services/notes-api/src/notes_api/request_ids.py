"""X-Request-ID: one id a client can quote to support, on the response and on every log line.

A client's own id is kept when it is well-formed (1-128 of `A-Z a-z 0-9 . _ -`), so a caller can
follow one request across its own logs and ours; anything else is replaced by a fresh random id,
never echoed (a header value is attacker-controlled text that would land in our logs). The id sits
beside the trace id: the trace id is for tracing tools, the request id is the one people quote.
The rule and the per-request context live here; the middleware is `http.RequestIds`.
"""

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from structlog.contextvars import bound_contextvars

HEADER = "X-Request-ID"
_WELL_FORMED = re.compile(r"[A-Za-z0-9._-]{1,128}")
_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being answered (None outside one)."""
    return _current.get()


def request_id_for(given: str | None) -> str:
    """The client's id when well-formed, else a fresh random one (never the client's text)."""
    if given is not None and _WELL_FORMED.fullmatch(given):
        return given
    return os.urandom(16).hex()


@contextmanager
def answering(request_id: str) -> Iterator[None]:
    """While a request is answered: its id for `current_request_id` and on every log line."""
    token = _current.set(request_id)
    try:
        with bound_contextvars(request_id=request_id):
            yield
    finally:
        _current.reset(token)
