"""Fixtures: a migrated database per test (cloned from a template), the app in-process, keys."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import JobType, Priority, job_stream
from notes_api.app import create_app
from notes_api.auth import create_key
from notes_api.search_indexes import migrate_notes
from notes_api.settings import NotesApiSettings
from servicekit import create_database_engine, setup_telemetry
from servicekit.testing import create_database, drop_database, fresh_database


@pytest.fixture(scope="session")
def template_database(postgres_admin_url: str) -> Iterator[str]:
    """One migrated database per session; each test gets a copy (much faster than migrating)."""
    name = f"notes_tpl_{uuid.uuid4().hex[:12]}"
    url = asyncio.run(create_database(postgres_admin_url, name))
    asyncio.run(migrate_notes(NotesApiSettings(database_url=url)))
    yield name
    asyncio.run(drop_database(postgres_admin_url, name))


@pytest.fixture
async def notes_database_url(postgres_admin_url: str, template_database: str) -> AsyncIterator[str]:
    database = fresh_database(postgres_admin_url, prefix="notes", template=template_database)
    async with database as url:
        yield url


@pytest.fixture
def settings(notes_database_url: str, redis_url: str, stream_prefix: str) -> NotesApiSettings:
    return NotesApiSettings(
        database_url=notes_database_url,
        redis_url=redis_url,
        stream_prefix=stream_prefix,
        ops_port=0,
        log_format="console",
        log_level="WARNING",
    )


@pytest.fixture
async def app(settings: NotesApiSettings) -> AsyncIterator[FastAPI]:
    application = create_app(settings, setup_telemetry(settings))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://notes.test") as http:
        yield http


@pytest.fixture
def engine(app: FastAPI) -> AsyncEngine:
    result: AsyncEngine = app.state.engine
    return result


@pytest.fixture
async def engine_direct(notes_database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine straight to the test database, for setup and checks outside the app."""
    engine = create_database_engine(NotesApiSettings(database_url=notes_database_url))
    yield engine
    await engine.dispose()


@pytest.fixture
async def alice(engine: AsyncEngine) -> dict[str, str]:
    _, key = await create_key(engine, "alice")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def bob(engine: AsyncEngine) -> dict[str, str]:
    _, key = await create_key(engine, "bob")
    return {"Authorization": f"Bearer {key}"}


async def outbox(engine: AsyncEngine, stream: str | None = None) -> list[dict[str, Any]]:
    """Outbox rows in write order (optionally of one stream) as dicts."""
    sql = "SELECT * FROM notes.outbox"
    sql += " WHERE stream = :stream ORDER BY id" if stream else " ORDER BY id"
    async with engine.connect() as connection:
        rows = await connection.execute(text(sql), {"stream": stream} if stream else {})
        return [dict(row._mapping) for row in rows]


async def count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as connection:
        result = await connection.execute(text(f"SELECT count(*) FROM notes.{table}"))
        return int(result.scalar_one())


async def create_note(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> Any:
    body = {"title": "a note", "body": "text", "tags": [], **fields}
    response = await client.post("/v1/notes", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


class TcpProxy:
    """A TCP forwarder the test can cut (refuse and drop connections) and restore, on one port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


def through(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.fixture
async def postgres_proxy(notes_database_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(notes_database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(redis_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    yield proxy
    await proxy.stop()


def attempt(cls: type, job_id: str, n: int, **fields: Any) -> Any:
    """A lifecycle event of attempt ``n`` of an archive job, as the archiver sends it."""
    return cls(producer="archiver", job_id=uuid.UUID(job_id), job_type="archive", attempt=n,
               stream=job_stream(JobType.ARCHIVE, Priority.DEFAULT), **fields)  # fmt: skip
