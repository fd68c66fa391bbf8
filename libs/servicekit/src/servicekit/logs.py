"""structlog configuration: JSON lines with service and trace ids, secrets scrubbed.

Every record goes through one pipeline, whether it was written with structlog or with the standard
library (FastStream, uvicorn, SQLAlchemy), so all of a process's output has one shape.
See https://www.structlog.org/en/stable/standard-library.html ("Rendering using structlog-based
formatters within logging").
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["SecretRedactor", "add_trace_ids", "configure_logging", "get_logger"]

_SENSITIVE_KEYS = re.compile(
    r"(authorization|password|passwd|secret|token|api[_-]?key|cookie)", re.IGNORECASE
)
_URL_CREDENTIALS = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@\s]*:)[^@\s]+@")
_BEARER = re.compile(r"(?P<head>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_MASK = "***"


class SecretRedactor:
    """A structlog processor that removes secrets from every value of an event.

    It masks values under sensitive keys (``authorization``, ``password``, ``api_key`` ...),
    passwords inside URLs, bearer tokens, and any registered secret value or token shape
    wherever it appears.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._shapes: list[tuple[str, re.Pattern[str]]] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Register a literal secret value (short values are ignored to avoid masking noise)."""
        if secret and len(secret) >= 4:
            self._secrets.add(secret)

    def add_shape(self, shape: re.Pattern[str], *, hint: str) -> None:
        """Mask every match of ``shape`` (a service's token format), keeping ``hint`` visible.

        ``hint`` is a literal every match starts with (``nk_``): text without it skips the regex,
        so the usual log line pays one substring test. A service knows its tokens' shape;
        servicekit does not, so the service registers it (a key pasted into a URL path).
        """
        if (hint, shape) not in self._shapes:  # one app built twice on one telemetry
            self._shapes.append((hint, shape))

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        """Scrub ``event_dict`` in place and return it."""
        for key, value in list(event_dict.items()):
            event_dict[key] = self._scrub(key, value)
        return event_dict

    def _scrub(self, key: str, value: Any) -> Any:
        if _SENSITIVE_KEYS.search(key) and value not in (None, ""):
            return _MASK
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, MutableMapping):
            return {k: self._scrub(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(key, v) for v in value]
        return value

    def scrub_text(self, text: str) -> str:
        """Return ``text`` with URL passwords, bearer tokens, token shapes and secrets masked."""
        # The substring tests skip the regexes for the usual text, which has neither.
        if "://" in text:
            text = _URL_CREDENTIALS.sub(rf"\g<head>{_MASK}@", text)
        lowered = text.lower()
        if "bearer" in lowered or "basic" in lowered:
            text = _BEARER.sub(rf"\g<head>{_MASK}", text)
        for hint, shape in self._shapes:
            if hint in text:
                text = shape.sub(hint + _MASK, text)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _MASK)
        return text


def add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add the current OpenTelemetry ``trace_id`` and ``span_id`` (null outside a span)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    else:
        event_dict.setdefault("trace_id", None)
        event_dict.setdefault("span_id", None)
    return event_dict


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # uvicorn adds an ANSI-coloured copy of its message for terminals; JSON lines do not want it.
    event_dict.pop("color_message", None)
    return event_dict


def _add_service(service: str) -> Processor:
    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


# Libraries that install their own handlers; their records are sent to the root handler instead.
_LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "faststream", "faststream.access")


def configure_logging(
    *,
    service: str,
    level: str = "INFO",
    fmt: str = "json",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> SecretRedactor:
    """Route structlog and standard-library logging through one JSON (or console) renderer.

    Returns the redactor so that secrets learned later (an API key just created) can be added.
    """
    redactor = SecretRedactor(secrets)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
        add_trace_ids,
    ]
    output = stream or sys.stdout
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=_wants_colour(output))
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_color_message,  # after ExtraAdder, which is where uvicorn's copy comes in
            structlog.processors.format_exc_info,
            redactor,  # last before rendering, so tracebacks are scrubbed too
            renderer,
        ],
    )
    handler = logging.StreamHandler(output)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in _LIBRARY_LOGGERS:
        library_logger = logging.getLogger(name)
        library_logger.handlers = []
        library_logger.propagate = True
    return redactor


def _wants_colour(stream: TextIO) -> bool:
    # The https://no-color.org and FORCE_COLOR conventions: `make run` pipes a process's output to
    # a terminal and sets FORCE_COLOR, since the process itself sees only a pipe.
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger bound to the standard-library logger ``name``."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
