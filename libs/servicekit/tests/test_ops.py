"""The ops endpoint: metrics, liveness and readiness of the dependencies a process needs."""

import asyncio

from prometheus_client import Counter

from servicekit import OpsServer, Readiness
from servicekit.metrics import new_registry


async def get(port: int, path: str, accept: str = "*/*") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n".encode())
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    head, _, body = response.partition("\r\n\r\n")
    return int(head.split(" ")[1]), body


async def healthy() -> None:
    return None


async def broken() -> None:
    raise ConnectionError("down")


async def test_metrics_health_and_readiness_are_served() -> None:
    registry = new_registry()
    Counter("demo_total", "a demo counter", registry=registry).inc()
    async with OpsServer(
        registry=registry, readiness=Readiness({"redis": healthy}), host="127.0.0.1", port=0
    ) as server:
        status, body = await get(server.port, "/metrics")
        assert status == 200
        assert "demo_total 1.0" in body
        status, body = await get(server.port, "/metrics", "application/openmetrics-text")
        assert status == 200
        assert body.rstrip().endswith("# EOF")
        assert (await get(server.port, "/healthz"))[0] == 200
        status, body = await get(server.port, "/readyz")
        assert (status, '"redis": "ok"' in body) == (200, True)
        assert (await get(server.port, "/nope"))[0] == 404


async def test_failing_dependency_or_latched_failure_makes_process_not_ready() -> None:
    readiness = Readiness({"postgres": broken, "redis": healthy}, cache_seconds=0)
    async with OpsServer(
        registry=new_registry(), readiness=readiness, host="127.0.0.1", port=0
    ) as server:
        status, body = await get(server.port, "/readyz")
        assert status == 503
        assert '"postgres": "unavailable"' in body
        readiness.checks = {"redis": healthy}
        assert (await get(server.port, "/readyz"))[0] == 200
        readiness.fail("consumer group vanished")
        status, body = await get(server.port, "/readyz")
        assert status == 503
        assert "consumer group vanished" in body
        assert (await get(server.port, "/healthz"))[0] == 200


async def test_slow_check_times_out_as_not_ready() -> None:
    async def hangs() -> None:
        await asyncio.sleep(30)

    ready, checks = await Readiness({"slow": hangs}, timeout=0.05).evaluate()
    assert not ready
    assert checks["slow"] == "unavailable"


async def test_facts_are_shown_on_readyz_without_making_the_process_unready() -> None:
    durability = {"value": None}
    readiness = Readiness(
        {"redis": healthy}, facts={"outbox_durability": lambda: durability["value"]}
    )
    async with OpsServer(
        registry=new_registry(), readiness=readiness, host="127.0.0.1", port=0
    ) as server:
        status, body = await get(server.port, "/readyz")
        assert (status, "facts" in body) == (200, False)
        durability["value"] = "none: AOF off"
        status, body = await get(server.port, "/readyz")
        assert status == 200
        assert '"facts": {"outbox_durability": "none: AOF off"}' in body
