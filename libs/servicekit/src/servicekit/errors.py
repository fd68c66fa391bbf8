"""Error classes that decide what the runtime does with a failed message."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ErrorKind", "PermanentError", "SkipJob", "TransientError", "classify"]


class PermanentError(Exception):
    """Retrying cannot help: the message goes to the dead-letter stream on first delivery.

    Raise it for a request that is invalid for business reasons (owner mismatch, unknown note
    kind). The platform's equivalent of Asynq's ``SkipRetry``.
    """


class TransientError(Exception):
    """Retrying may help (a dependency is down, a version has not arrived yet)."""


class SkipJob(Exception):  # noqa: N818 - it is an outcome, not an error
    """The job cannot apply any more (its note was deleted): acknowledge it and report skipped."""


class ErrorKind(StrEnum):
    """How the runtime routes a failure."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"


def classify(exc: BaseException) -> ErrorKind:
    """Send ``PermanentError`` (undecodable entries are one) to dead letters, all else to retry.

    A handler timeout (``TimeoutError``) and every other exception are transient, even a JSON or
    validation error raised inside a handler (a dependency answering an HTML error page is no
    reason to give up): retrying a permanent failure costs a few attempts, dead-lettering a
    transient one loses work.
    """
    if isinstance(exc, PermanentError):
        return ErrorKind.PERMANENT
    return ErrorKind.TRANSIENT
