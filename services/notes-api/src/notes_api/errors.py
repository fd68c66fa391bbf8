"""RFC 9457 problem+json for every error the API answers, PostgreSQL outages included.

A database error never reaches the log with the values of its statement: the engine hides
parameters (`create_database_engine`), and the log line names the error's class, its SQLSTATE
and the statement, not the driver's message (which quotes values: `invalid input syntax for
type uuid: "..."`). A value the database cannot take (SQLSTATE class 22) is the request's fault:
400, not 500.
"""

import traceback
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from notes_api.request_ids import current_request_id
from servicekit import get_logger

PROBLEM_JSON = "application/problem+json"
_log = get_logger("notes_api.errors")


_PROBLEM_CODES = (400, 401, 404, 409, 412, 413, 415, 422, 429, 503)
PROBLEMS: dict[int | str, dict[str, object]] = {
    code: {"description": "problem+json"} for code in _PROBLEM_CODES
}
"""The problem answers a route may give, for its OpenAPI `responses`."""


class Problem(Exception):  # noqa: N818 - it is the response, not an error condition
    """Answer with a problem document; raise it anywhere in a request."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(problem: Problem, instance: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": problem.title, "status": problem.status}
    if problem.detail:
        body["detail"] = problem.detail
    if instance:
        body["instance"] = instance
    if request_id := current_request_id():  # the id a client quotes to support
        body["request_id"] = request_id
    body.update(problem.extra)
    return JSONResponse(body, problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


# SQLSTATEs that say the server is going away or not there yet (08: connection exception; 57P01
# admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now, e.g. "the database system is
# shutting down"): PostgreSQL answered, but only to refuse. SQLAlchemy wraps 57P0x as a plain
# DBAPIError, so they are told apart by their code, not their class.
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means PostgreSQL cannot be reached (as opposed to a bug or bad query)."""
    if isinstance(exc, OSError | TimeoutError | sa_exc.TimeoutError):
        return True
    if any(
        str(getattr(link, "sqlstate", "") or "").startswith(_UNAVAILABLE_SQLSTATES)
        for link in _error_chain(exc)
    ):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return bool(
            exc.connection_invalidated
            or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
            or isinstance(exc.orig, OSError)
        )
    return isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError)


def _error_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or getattr(current, "orig", None)
    return chain


def caused_by_a_value(exc: BaseException) -> bool:
    """Whether the database refused a value (SQLSTATE class 22), or the driver could not encode it.

    asyncpg's client-side refusal ("invalid input for query argument") is an `InterfaceError`
    that is also a `ValueError`; a lost connection is never one.
    """
    for link in _error_chain(exc):
        if isinstance(link, sa_exc.DataError):
            return True
        if str(getattr(link, "sqlstate", "") or "").startswith("22"):
            return True
        if isinstance(link, asyncpg.InterfaceError) and isinstance(link, ValueError):
            return True
    return False


def database_error_fields(exc: BaseException) -> dict[str, Any]:
    """What a log line may say about a database error: classes, SQLSTATE, statement, our frame.

    Never the messages: PostgreSQL's and the driver's quote the values they refused.
    """
    chain = _error_chain(exc)
    sqlstates = [str(s) for link in chain if (s := getattr(link, "sqlstate", None))]
    ours = [
        f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)
        if "notes_api" in frame.filename
    ]
    return {
        "error": " <- ".join(type(link).__name__ for link in chain),
        "sqlstate": sqlstates[0] if sqlstates else None,
        "statement": getattr(exc, "statement", None),
        "raised_at": ours[-1] if ours else None,
    }


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo the input back: it may hold what cannot be encoded (a lone surrogate).
    return [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": error.get("msg", ""),
         "type": error.get("type", "")}
        for error in exc.errors()
    ]  # fmt: skip


_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    sa_exc.TimeoutError,
    sa_exc.DBAPIError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
)


def install_problem_handlers(app: FastAPI, *, retry_after: int) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc, request.url.path)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else None
        problem = Problem(exc.status_code, detail, headers=dict(exc.headers or {}))
        return problem_response(problem, request.url.path)

    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = _validation_errors(exc)
        if any(error["type"] == "json_invalid" for error in errors):
            problem = Problem(400, "The body is not valid JSON.", errors=errors)
        else:
            problem = Problem(422, "The request is not valid.", errors=errors)
        return problem_response(problem, request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        path = request.url.path
        if database_unavailable(exc):
            _log.warning("database.unavailable", path=path, **database_error_fields(exc))
            problem = Problem(
                503,
                "The database is unavailable; retry later.",
                headers={"Retry-After": str(retry_after)},
            )
        elif caused_by_a_value(exc):
            _log.warning("request.value_refused", path=path, **database_error_fields(exc))
            problem = Problem(400, "A value in the request is out of range for its field.")
        elif isinstance(exc, sa_exc.DBAPIError):
            _log.error("request.failed", path=path, **database_error_fields(exc))
            problem = Problem(500, "Internal error.")
        else:
            _log.exception("request.failed", path=path)
            problem = Problem(500, "Internal error.")
        return problem_response(problem, request.url.path)

    # Registered per class (not only under `Exception`): Starlette re-raises what reaches the
    # catch-all handler after answering, while these are answered and done.
    for unavailable in _UNAVAILABLE:
        app.add_exception_handler(unavailable, on_unexpected)
    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(Exception, on_unexpected)
