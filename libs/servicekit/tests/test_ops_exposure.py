"""What the ops port shows and takes from whoever reaches it (issue 12, finding 7)."""

import asyncio
import logging

import pytest

from servicekit import OpsServer, Readiness, ServiceSettings
from servicekit.metrics import new_registry

from .test_ops import get, healthy


async def test_ops_host_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPS_HOST", "127.0.0.1")
    assert ServiceSettings().ops_host == "127.0.0.1"
    assert ServiceSettings.model_fields["ops_host"].default == "0.0.0.0"


async def test_readiness_runs_its_checks_once_per_cache_interval() -> None:
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1

    readiness = Readiness({"postgresql": counted}, cache_seconds=60)
    async with OpsServer(
        registry=new_registry(), readiness=readiness, host="127.0.0.1", port=0
    ) as server:
        for _ in range(3):
            assert (await get(server.port, "/readyz"))[0] == 200
        statuses = await asyncio.gather(*(get(server.port, "/readyz") for _ in range(5)))
    assert {status for status, _ in statuses} == {200}
    assert calls == 1


async def test_readiness_is_cached_for_one_second_by_default() -> None:
    assert Readiness().cache_seconds == 1.0


async def test_readyz_names_the_dependency_down_but_not_the_exception() -> None:
    async def refused() -> None:
        raise ConnectionRefusedError("connect to 10.1.2.3:5432 refused")

    readiness = Readiness({"postgresql": refused, "redis": healthy})
    async with OpsServer(
        registry=new_registry(), readiness=readiness, host="127.0.0.1", port=0
    ) as server:
        status, body = await get(server.port, "/readyz")
    assert status == 503
    assert '"postgresql": "unavailable"' in body
    assert '"redis": "ok"' in body
    assert "Error" not in body
    assert "10.1.2.3" not in body


async def test_a_100_kb_header_is_answered_431_without_an_error_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with OpsServer(
        registry=new_registry(), readiness=Readiness(), host="127.0.0.1", port=0
    ) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        # The server's own task ends after its answer; give the loop a turn to log anything.
        assert (await get(server.port, "/healthz"))[0] == 200
    assert response.startswith(b"HTTP/1.1 431 ")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
