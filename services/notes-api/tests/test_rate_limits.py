"""Per-key rate limits in Redis: 429 with Retry-After and RateLimit headers, per route class,
decided before the route's work, and a logged, counted local fallback while Redis is down."""

import asyncio
import io
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from notes_api.app import create_app
from notes_api.auth import create_key, hash_key
from notes_api.settings import NotesApiSettings
from servicekit import Telemetry, setup_telemetry

from .conftest import count

NEVER_REFILLS = 0.001  # one token per 1000 s: a test's requests see no refill


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def tight(settings: NotesApiSettings, **update: Any) -> NotesApiSettings:
    limits = {
        f"rate_limit_{name}_{field}": value
        for name in ("reads", "writes", "bulk")
        for field, value in (("per_second", NEVER_REFILLS), ("burst", 3))
    }
    return settings.model_copy(update={**limits, **update})


@asynccontextmanager
async def served(
    settings: NotesApiSettings, telemetry: Telemetry | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, telemetry or setup_telemetry(settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


async def test_a_key_over_its_read_burst_gets_429_with_retry_after_and_ratelimit_headers(
    settings: NotesApiSettings, engine_direct: AsyncEngine
) -> None:
    _, key = await create_key(engine_direct, "alice")
    alice = {"Authorization": f"Bearer {key}"}
    telemetry = setup_telemetry(settings)
    async with served(tight(settings), telemetry) as client:
        answers = [await client.get("/v1/notes", headers=alice) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["ratelimit"].split(";")[1] for a in answers] == ["r=2", "r=1", "r=0", "r=0"]
    for answer in answers:
        assert answer.headers["ratelimit-policy"] == '"reads";q=3;w=3000'
    limited = answers[-1]
    assert limited.headers["content-type"] == "application/problem+json"
    assert int(limited.headers["retry-after"]) >= 999
    assert limited.json()["status"] == 429
    assert "x-request-id" in limited.headers
    sample = telemetry.registry.get_sample_value(
        "http_rate_limited_total", {"route_class": "reads"}
    )
    assert sample == 1.0
    # Refused before routing, yet counted under the route it asked for, not as "unmatched".
    refused = telemetry.registry.get_sample_value(
        "http_requests_total", {"method": "GET", "route": "/v1/notes", "status": "429"}
    )
    assert refused == 1.0


async def test_route_classes_and_keys_have_buckets_of_their_own(
    settings: NotesApiSettings, engine_direct: AsyncEngine
) -> None:
    _, key_a = await create_key(engine_direct, "alice")
    _, key_b = await create_key(engine_direct, "bob")
    alice, bob = ({"Authorization": f"Bearer {k}"} for k in (key_a, key_b))
    async with served(tight(settings)) as client:
        writes = [await client.post("/v1/notes", json={"title": "t"}, headers=alice)
                  for _ in range(4)]  # fmt: skip
        assert [w.status_code for w in writes] == [201, 201, 201, 429]
        assert writes[0].headers["ratelimit-policy"].startswith('"writes"')
        assert (await client.get("/v1/notes", headers=alice)).status_code == 200
        bulk = await client.post("/v1/notes:bulk-archive", json={"tag": "x"}, headers=alice)
        assert bulk.status_code == 202
        assert bulk.headers["ratelimit-policy"].startswith('"bulk"')
        assert (await client.post("/v1/notes", json={"title": "b"}, headers=bob)).status_code == 201
    assert await count(engine_direct, "notes") == 4  # the limited POST wrote nothing


async def test_the_limit_is_shared_through_redis_by_every_process_under_the_prefix(
    settings: NotesApiSettings, engine_direct: AsyncEngine, redis_client: Redis
) -> None:
    _, key = await create_key(engine_direct, "alice")
    alice = {"Authorization": f"Bearer {key}"}
    async with served(tight(settings)) as first, served(tight(settings)) as second:
        assert (await first.get("/v1/notes", headers=alice)).status_code == 200
        assert (await first.get("/v1/notes", headers=alice)).status_code == 200
        assert (await second.get("/v1/notes", headers=alice)).status_code == 200
        assert (await second.get("/v1/notes", headers=alice)).status_code == 429
    stored = [k.decode() async for k in redis_client.scan_iter(match=f"{settings.stream_prefix}*")]
    assert stored == [f"{settings.stream_prefix}ratelimit:reads:{hash_key(key)}"]


async def test_a_limited_key_is_answered_without_the_database(
    settings: NotesApiSettings, engine_direct: AsyncEngine
) -> None:
    _, key = await create_key(engine_direct, "alice")
    alice = {"Authorization": f"Bearer {key}"}
    down = tight(settings, database_url=f"postgresql://nobody@127.0.0.1:{_closed_port()}/none")
    async with served(down) as client:
        answers = [(await client.get("/v1/notes", headers=alice)).status_code for _ in range(4)]
    assert answers == [503, 503, 503, 429]


async def test_with_redis_down_a_local_bucket_limits_writes_keep_working_and_it_is_logged_once(
    settings: NotesApiSettings, engine_direct: AsyncEngine
) -> None:
    _, key = await create_key(engine_direct, "alice")
    alice = {"Authorization": f"Bearer {key}"}
    logs = io.StringIO()
    no_redis = tight(settings, redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    telemetry = setup_telemetry(
        no_redis.model_copy(update={"log_level": "WARNING", "log_format": "json"}),
        log_stream=logs,
    )
    async with served(no_redis, telemetry) as client:
        writes = [await client.post("/v1/notes", json={"title": "t"}, headers=alice)
                  for _ in range(4)]  # fmt: skip
        reads = [await client.get("/v1/notes", headers=alice) for _ in range(2)]
    assert [w.status_code for w in writes] == [201, 201, 201, 429]
    assert [r.status_code for r in reads] == [200, 200]
    assert writes[0].headers["ratelimit"] == '"writes";r=2;t=1000'
    events = [json.loads(line)["event"] for line in logs.getvalue().splitlines()]
    assert events.count("rate_limit.redis_unavailable") == 1, events
    fallbacks = telemetry.registry.get_sample_value("rate_limit_local_decisions_total")
    assert fallbacks == 6.0


async def test_a_redis_that_accepts_and_never_answers_costs_a_timeout_not_the_request(
    settings: NotesApiSettings, engine_direct: AsyncEngine
) -> None:
    _, key = await create_key(engine_direct, "alice")
    alice = {"Authorization": f"Bearer {key}"}
    held: list[asyncio.StreamWriter] = []

    async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    hanging = tight(settings, redis_url=f"redis://127.0.0.1:{port}/0")
    telemetry = setup_telemetry(hanging)
    try:
        async with served(hanging, telemetry) as client:
            answers = [await client.get("/v1/notes", headers=alice) for _ in range(4)]
    finally:
        for writer in held:
            writer.transport.abort()
        silent.close()
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert telemetry.registry.get_sample_value("rate_limit_local_decisions_total") == 4.0
