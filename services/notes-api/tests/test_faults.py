import asyncio
import json
import time

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import NOTES_CREATED
from notes_api.app import create_app
from notes_api.auth import create_key
from notes_api.settings import SCHEMA, NotesApiSettings
from servicekit import OutboxRelay, StreamKeys, setup_telemetry
from servicekit.testing import eventually

from .conftest import TcpProxy, count, create_note, outbox, through


async def _ops_get(app: FastAPI, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", app.state.ops.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def _readyz_is(app: FastAPI, status: int) -> bool:
    return (await _ops_get(app, "/readyz"))[0] == status


async def test_postgresql_down_is_503_with_retry_after_within_2_s_and_recovers_without_restart(
    settings: NotesApiSettings, postgres_proxy: TcpProxy, engine_direct: AsyncEngine
) -> None:
    _, key = await create_key(engine_direct, "alice")
    alice = {"Authorization": f"Bearer {key}"}
    proxied = settings.model_copy(
        update={"database_url": through(settings.database_url or "", postgres_proxy)}
    )
    app = create_app(proxied, setup_telemetry(proxied))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await create_note(client, alice)
            assert (await _ops_get(app, "/readyz"))[0] == 200
            await postgres_proxy.stop()
            for method in ("GET", "POST"):
                started = time.monotonic()
                response = await client.request(method, "/v1/notes", json={"title": "lost"},
                                                headers=alice)  # fmt: skip
                assert time.monotonic() - started < 2.0
                assert response.status_code == 503
                assert response.headers["retry-after"].isdigit()
                assert response.headers["content-type"] == "application/problem+json"
            await eventually(lambda: _readyz_is(app, 503), within=10)  # cached for 1 s
            await postgres_proxy.start()
            response = await eventually(lambda: _created(client, alice), within=10)
            assert response.status_code == 201
            await eventually(lambda: _readyz_is(app, 200), within=10)
    assert await count(engine_direct, "notes") == 2  # nothing partial from the outage
    assert len(await outbox(engine_direct, NOTES_CREATED)) == 2


async def _created(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response | None:
    response = await client.post("/v1/notes", json={"title": "back"}, headers=headers)
    return response if response.status_code == 201 else None


@pytest.mark.single_redis("a TCP proxy in front of one Redis port: a cluster redirects past it")
async def test_writes_keep_answering_201_while_redis_is_down_and_the_outbox_delivers_later(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    engine: AsyncEngine,
    redis_proxy: TcpProxy,
    redis_client: Redis,
    stream_prefix: str,
) -> None:
    keys = StreamKeys(stream_prefix)
    spans = InMemorySpanExporter()  # the relay's failed publish spans show it tried and failed
    tracing = TracerProvider()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    proxied = Redis.from_url(f"redis://127.0.0.1:{redis_proxy.port}/0", socket_connect_timeout=1)
    relay = OutboxRelay(engine, proxied, schema=SCHEMA, keys=keys, poll_interval=0.05,
                        max_backoff=0.2, publish_timeout=1.0, tracer_provider=tracing)  # fmt: skip
    await redis_proxy.stop()
    ids = [(await create_note(client, alice, title=f"n{i}"))["id"] for i in range(5)]
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))

    async def failed_twice() -> bool:
        failed = [s for s in spans.get_finished_spans() if s.status.status_code is StatusCode.ERROR]
        return len({s.context.trace_id for s in failed}) == 5 and len(failed) >= 10

    await eventually(failed_twice, within=10)  # two rounds of the batch, still running
    assert not relaying.done()
    assert await redis_client.xlen(keys.stream(NOTES_CREATED)) == 0
    await redis_proxy.start()

    async def delivered() -> bool:
        return await redis_client.xlen(keys.stream(NOTES_CREATED)) == 5

    await eventually(delivered, within=10)
    stop.set()
    await relaying
    await proxied.aclose()
    entries = await redis_client.xrange(keys.stream(NOTES_CREATED))
    published = [json.loads(fields[b"__data__"])["body"]["note_id"] for _, fields in entries]
    assert published == ids  # none lost, in order
    assert all(row["published_at"] is not None for row in await outbox(engine))
