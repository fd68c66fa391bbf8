"""What a failing statement leaves in the logs: the statement and its error class, never values."""

import io
from uuid import uuid4

import asyncpg
import httpx
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from notes_api.app import create_app
from notes_api.settings import NotesApiSettings
from servicekit import setup_telemetry

SECRET_VALUE = f"parameter-{uuid4().hex}"


async def test_a_failing_statement_answers_without_its_parameters_in_the_log(
    settings: NotesApiSettings,
) -> None:
    logs = io.StringIO()
    telemetry = setup_telemetry(settings.model_copy(update={"log_level": "INFO"}), log_stream=logs)
    app = create_app(settings, telemetry)

    @app.get("/test/server-error")
    async def server_error() -> None:  # a statement PostgreSQL refuses, holding a value
        async with app.state.engine.connect() as connection:
            await connection.execute(
                text("SELECT * FROM notes.no_such_table WHERE x = :value"), {"value": SECRET_VALUE}
            )

    @app.get("/test/bad-value")
    async def bad_value() -> None:  # a value PostgreSQL cannot take for the type
        async with app.state.engine.connect() as connection:
            await connection.execute(text("SELECT CAST(:value AS uuid)"), {"value": SECRET_VALUE})

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            failed = await client.get("/test/server-error")
            rejected = await client.get("/test/bad-value")
    assert failed.status_code == 500
    assert rejected.status_code == 400
    assert rejected.headers["content-type"] == "application/problem+json"
    output = logs.getvalue()
    assert "request.failed" in output
    assert "no_such_table" in output  # the statement is there, to find the bug
    assert SECRET_VALUE not in output
    assert SECRET_VALUE not in failed.text + rejected.text


async def test_postgresql_refusing_while_it_shuts_down_answers_503_not_500(
    settings: NotesApiSettings,
) -> None:
    # What `pg_ctl stop` makes a new connection get (SQLSTATE 57P03), as SQLAlchemy raises it: a
    # plain DBAPIError, neither OperationalError nor a lost connection. Found by the chaos suite.
    app = create_app(settings, setup_telemetry(settings, log_stream=io.StringIO()))
    refusal = asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")

    @app.get("/test/shutting-down")
    async def shutting_down() -> None:
        raise sa_exc.DBAPIError("SELECT 1", None, refusal)

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answer = await client.get("/test/shutting-down")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert "Retry-After" in answer.headers
