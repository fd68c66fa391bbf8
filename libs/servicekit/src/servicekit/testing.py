"""pytest plugin with real Redis and PostgreSQL for integration tests.

Installed through the ``pytest11`` entry point. The servers come from ``REDIS_URL`` /
``DATABASE_URL``; in this repository ``make test`` sets them (the ``devstack`` plugin resolves the
local servers, or throw-away embedded ones, when they are unset). A run without them fails and
says what to set.

``REDIS_URL`` may name a Redis Cluster (``redis+cluster://``): the fixtures then hand out cluster
clients, and a test marked ``@pytest.mark.single_redis(reason)`` (it needs one server: a private
server it kills, FLUSHALL, a proxy in front of one port) is skipped with its reason.

Each test gets its own Redis key prefix (pass it as ``STREAM_PREFIX``) and its own freshly created
PostgreSQL database, so tests can run in parallel (``pytest -n auto``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from contracts import Event, Service, groups_for
from servicekit.connections import cluster_url, redis_client_from_url
from servicekit.redis_client import RedisClient

if TYPE_CHECKING:
    from servicekit.jobs.routing import JobRouter, Route
    from servicekit.keys import StreamKeys

E = TypeVar("E", bound=Event)

__all__ = [
    "ServiceProcess",
    "assert_routes_declared",
    "create_database",
    "database_url",
    "drop_database",
    "eventually",
    "free_port",
    "fresh_database",
    "postgres_admin_url",
    "read_events",
    "redis_client",
    "redis_is_cluster",
    "redis_url",
    "stream_prefix",
    "with_database",
]

_MISSING = (
    "{var} is not set. Run the tests with `make test`, which finds the local servers or starts "
    "embedded ones, or set {var} to a running server, e.g. {var}={example}"
)


def _from_environment(var: str, example: str) -> str:
    url = os.environ.get(var)
    if not url:
        pytest.fail(_MISSING.format(var=var, example=example), pytrace=False)
    return url


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``single_redis`` marker."""
    config.addinivalue_line(
        "markers",
        "single_redis(reason): needs one Redis server, not a cluster; skipped when REDIS_URL "
        "names a Redis Cluster",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``single_redis`` tests when ``REDIS_URL`` names a cluster, saying why."""
    marker = item.get_closest_marker("single_redis")
    if marker is not None and redis_is_cluster():
        reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
        pytest.skip(f"needs a single Redis server, REDIS_URL is a cluster: {reason}")


def redis_is_cluster(url: str | None = None) -> bool:
    """Whether ``url`` (default: ``REDIS_URL``) names a Redis Cluster."""
    url = url if url is not None else os.environ.get("REDIS_URL", "")
    return cluster_url(url) is not None


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a real Redis (>= 7.0) or Valkey (8.1) server shared by the session."""
    return _from_environment("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def stream_prefix() -> str:
    """A key prefix no other test uses; pass it as ``STREAM_PREFIX``."""
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def redis_client(redis_url: str, stream_prefix: str) -> AsyncIterator[RedisClient]:
    """A client for the test's Redis (a cluster client on a cluster); its keys go afterwards."""
    client = redis_client_from_url(redis_url)
    yield client
    async for key in client.scan_iter(match=f"*{stream_prefix}*", count=1000):
        await client.unlink(key)
    await client.aclose()


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """URL of a real PostgreSQL (15 or 18) server, on a database that may create others."""
    return _from_environment("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def with_database(url: str, name: str) -> str:
    """Return ``url`` pointing at database ``name`` (same server and credentials)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(admin_url: str, sql: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def create_database(admin_url: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` (a copy of ``template`` if given); return its URL."""
    source = f' TEMPLATE "{template}"' if template else ""
    await _admin(admin_url, f'CREATE DATABASE "{name}"{source}')
    return with_database(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name``, closing any connection still open to it."""
    await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def fresh_database(
    admin_url: str, *, prefix: str = "test", template: str | None = None
) -> AsyncIterator[str]:
    """Create a uniquely named database (a copy of ``template`` if given), yield its URL, drop it.

    A migrated template copied per test is much faster than migrating each test's database.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    url = await create_database(admin_url, name, template=template)
    try:
        yield url
    finally:
        await drop_database(admin_url, name)


@pytest.fixture
async def database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for this test (dropped afterwards); a plain postgresql:// URL."""
    async with fresh_database(postgres_admin_url) as url:
        yield url


async def eventually(probe: Callable[[], Any], within: float = 15.0, every: float = 0.02) -> Any:
    """Poll ``probe`` (sync, or returning an awaitable) until it is truthy; fail at the deadline.

    Tests synchronise with this, never with sleeps: it returns as soon as the condition holds.
    """
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(every)


def assert_routes_declared(routes: JobRouter | Iterable[Route], service: Service | str) -> None:
    """Fail unless ``routes`` read exactly the (stream, group, handler) rows contracts declares.

    contracts is the topology's one declaration: the runtime creates its groups and trims no
    stream past what one of them needs. A route it does not list could lose entries to trimming;
    a listed group nobody serves would hold its stream's entries forever. Every service's tests
    call this with its router(s).
    """
    from servicekit.jobs.routing import JobRouter

    listed = routes.routes if isinstance(routes, JobRouter) else routes
    served = {
        (stream.name, route.group, route.name) for route in listed for stream in route.streams
    }
    declared = {(g.stream, g.group, g.handler) for g in groups_for(service)}
    problems = [
        *(f"route not declared in contracts.groups: {row}" for row in sorted(served - declared)),
        *(
            f"declared in contracts.groups, no route serves it: {row}"
            for row in sorted(declared - served)
        ),
    ]
    assert not problems, f"{Service(service)} routes disagree with contracts.groups:\n" + "\n".join(
        problems
    )


async def read_events(
    redis: RedisClient, keys: StreamKeys, stream: str, event_type: type[E]
) -> list[E]:
    """Return every event on the contracts stream ``stream``, oldest first, as ``event_type``."""
    from servicekit.jobs._codec import decode_entry

    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(keys.stream(stream))  # type: ignore[assignment]
    return [cast("E", decode_entry(fields, event_type)[0]) for _, fields in entries]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a process's ``OPS_PORT``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """A service's console script as a subprocess (``python -m <module>``), for process tests.

    ``env`` holds what the test gives it (``REDIS_URL``, ``DATABASE_URL``, ``STREAM_PREFIX``,
    ``OPS_PORT``); its output is appended to ``log``. One instance starts one process at a time.
    """

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.module, self.env, self.log = module, env, log
        self.ops = f"http://127.0.0.1:{env['OPS_PORT']}"  # always http on loopback (S310 below)
        self.process: subprocess.Popen[bytes] | None = None

    def migrate(self) -> None:
        """Run ``<module> migrate`` to the end."""
        command = [sys.executable, "-m", self.module, "migrate"]
        subprocess.run(command, env=self.env, check=True, timeout=60)  # noqa: S603 - our module

    def start(self, consumer: str) -> None:
        """Start the service as consumer ``consumer``."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - the test's own module
                [sys.executable, "-m", self.module],
                env={**self.env, "CONSUMER_NAME": consumer},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def status(self, path: str) -> int:
        """The ops port's HTTP status for ``path``, 0 when it does not answer."""
        try:
            with urllib.request.urlopen(self.ops + path, timeout=1) as response:  # noqa: S310
                return int(response.status)
        except OSError:
            return 0

    def metrics(self) -> str:
        """The ops port's ``/metrics`` text."""
        with urllib.request.urlopen(self.ops + "/metrics", timeout=1) as response:  # noqa: S310
            return str(response.read().decode())

    async def ready(self) -> None:
        """Wait until ``/readyz`` answers 200."""

        async def answers() -> bool:
            return await asyncio.to_thread(self.status, "/readyz") == 200

        await eventually(answers, within=30)

    def signal(self, sig: signal.Signals) -> int:
        """Send ``sig`` and return the exit code (negative: killed by a signal)."""
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)

    def stop(self) -> None:
        """Kill the process if it still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
