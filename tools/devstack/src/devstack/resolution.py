"""Where Redis and PostgreSQL are, decided once per developer command.

For each server, in order:

1. ``REDIS_URL`` / ``DATABASE_URL`` when set;
2. the local default (``redis://127.0.0.1:6379/0``, ``postgresql://postgres@127.0.0.1:5432/postgres``)
   when it answers; ``DEVSTACK_LOCAL_REDIS_URL`` / ``DEVSTACK_LOCAL_DATABASE_URL`` change the
   address probed (a dead address exercises the embedded path on a machine with local servers);
3. an embedded server from a PyPI wheel (Valkey 8.1, PostgreSQL 18): under ``.local/`` for
   ``make run`` (kept between runs), in a temporary directory for a test run (thrown away);
4. a testcontainers container, only when asked (``DEVSTACK_SERVERS=docker``) where Docker runs.

``DEVSTACK_SERVERS`` (``auto``, the default; ``local``; ``embedded``; ``docker``) narrows step 2-4
to one kind. ``DEVSTACK_REDIS_CLUSTER=1`` (with ``REDIS_URL`` unset) replaces steps 2-4 for Redis
with a throw-away 3-master Redis Cluster (:class:`servicekit.local_cluster.LocalCluster`, from the
machine's ``redis-server`` or the embedded Valkey) and a ``redis+cluster://`` URL; it is stopped
with the stack. Services never resolve anything: they read the environment, and the entry points
(``make run``, ``make test``, ``make key``, ``make bench``) pass the resolved URLs in.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from devstack.embedded import EmbeddedPostgres, EmbeddedValkey
from devstack.probe import hide_password, postgres_version, redis_version

__all__ = ["Choice", "Resolved", "ServerStack"]

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
Kind = Literal["auto", "local", "embedded", "docker"]
_KINDS: tuple[Kind, ...] = ("auto", "local", "embedded", "docker")


@dataclass(frozen=True)
class Choice:
    """One server as resolved: its URL, where it came from, and what answered."""

    url: str
    origin: str  # "environment", "local", "embedded (.local/)", "embedded (throw-away)", "docker"
    version: str | None

    def describe(self) -> str:
        """One line for people: URL without password, origin, server version."""
        version = f", {self.version}" if self.version else ""
        return f"{hide_password(self.url)} ({self.origin}{version})"


@dataclass(frozen=True)
class Resolved:
    """Both servers, and the environment a child process needs to use them."""

    redis: Choice
    postgres: Choice

    def environment(self) -> dict[str, str]:
        """``REDIS_URL`` and ``DATABASE_URL`` for child processes."""
        return {"REDIS_URL": self.redis.url, "DATABASE_URL": self.postgres.url}

    def describe(self) -> str:
        """The line every entry point prints once."""
        return f"Redis {self.redis.describe()}; PostgreSQL {self.postgres.describe()}"


class _Embedded(Protocol):
    name: str

    def running(self) -> str | None: ...
    def start(self) -> str: ...
    def stop(self) -> None: ...


class ServerStack:
    """Resolves both servers for one command and stops what it started when closed.

    ``home`` holds embedded servers' files. ``throwaway`` servers run without durability and are
    deleted on close. ``adopt``: a running embedded server found in ``home`` (left by a ``make run``
    that was killed) is taken over and stopped on close, as if this stack had started it; without
    it, a server found running belongs to someone else (``make key`` beside ``make run``).
    """

    def __init__(self, home: Path, *, throwaway: bool, adopt: bool = False) -> None:
        self.home = home
        self.throwaway = throwaway
        self.adopt = adopt
        self._stops: list[Callable[[], None]] = []
        self._started: list[str] = []
        self._resolved: Resolved | None = None

    @classmethod
    def for_workspace(cls, root: Path, *, adopt: bool = False) -> ServerStack:
        """Durable embedded servers under ``<root>/.local/`` (``make run``, ``make key``)."""
        return cls(root / ".local", throwaway=False, adopt=adopt)

    @classmethod
    def for_test_run(cls) -> ServerStack:
        """Throw-away embedded servers in a temporary directory (``make test``)."""
        return cls(Path(tempfile.mkdtemp(prefix="devstack-")), throwaway=True)

    def resolve(self) -> Resolved:
        """Decide both servers, starting embedded ones if needed; the same answer on every call."""
        if self._resolved is None:
            kind = _requested_kind()
            self.home.mkdir(parents=True, exist_ok=True)
            with self._lock():
                redis = self._choose(
                    kind, "REDIS_URL", "DEVSTACK_LOCAL_REDIS_URL", LOCAL_REDIS_URL,
                    redis_version, EmbeddedValkey(self.home / "valkey", durable=not self.throwaway),
                )  # fmt: skip
                postgres = self._choose(
                    kind, "DATABASE_URL", "DEVSTACK_LOCAL_DATABASE_URL", LOCAL_DATABASE_URL,
                    postgres_version,
                    EmbeddedPostgres(self.home / "postgres", durable=not self.throwaway),
                )  # fmt: skip
            self._resolved = Resolved(redis=redis, postgres=postgres)
        return self._resolved

    def started_any(self) -> bool:
        """True when resolving had to start an embedded server or a container."""
        return bool(self._started)

    def close(self) -> None:
        """Stop the embedded servers this stack started (or adopted); delete throw-away files."""
        try:
            while self._stops:
                stop = self._stops.pop()
                try:
                    stop()
                except Exception as error:  # the other servers must still be stopped
                    print(f"devstack: stopping a server failed: {error}", file=sys.stderr)
        finally:
            if self.throwaway:
                shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> ServerStack:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _choose(
        self,
        kind: Kind,
        variable: str,
        local_variable: str,
        local_default: str,
        version_of: Callable[[str], str | None],
        embedded: _Embedded,
    ) -> Choice:
        url = os.environ.get(variable)
        if url:
            # Trusted as given: a wrong URL fails in the service with the service's own message.
            return Choice(url, "environment", version_of(url))
        if variable == "REDIS_URL" and _cluster_requested():
            return self._cluster(version_of)
        if kind in ("auto", "local"):
            local = os.environ.get(local_variable) or local_default
            version = version_of(local)
            if version:
                return Choice(local, "local", version)
            if kind == "local":
                msg = f"DEVSTACK_SERVERS=local but nothing answers at {hide_password(local)}"
                raise RuntimeError(msg)
        if kind == "docker":
            return self._container(variable, version_of)
        origin = "embedded (throw-away)" if self.throwaway else f"embedded ({self.home.name}/)"
        url = embedded.running()
        if url is None:
            # Registered first: whatever an interrupted start left is stopped on close.
            self._stops.append(embedded.stop)
            self._started.append(embedded.name)
            url = embedded.start()
        elif self.adopt:
            self._stops.append(embedded.stop)
        return Choice(url, origin, version_of(url))

    def _cluster(self, version_of: Callable[[str], str | None]) -> Choice:
        # Imported here: only the cluster leg needs the harness.
        from servicekit.local_cluster import LocalCluster

        cluster = LocalCluster(masters=3)
        self._stops.append(cluster.stop)
        self._started.append("Redis Cluster")
        url = cluster.start()
        return Choice(url, "local cluster, 3 masters, throw-away", version_of(url))

    def _container(self, variable: str, version_of: Callable[[str], str | None]) -> Choice:
        # testcontainers is imported only here: it is an optional path for machines with Docker.
        if variable == "REDIS_URL":
            from testcontainers.redis import RedisContainer

            self._started.append("Redis container")
            redis = RedisContainer("redis:7.0").start()
            self._stops.append(redis.stop)
            port = redis.get_exposed_port(6379)
            url = f"redis://{redis.get_container_host_ip()}:{port}/0"
        else:
            from testcontainers.postgres import PostgresContainer

            self._started.append("PostgreSQL container")
            postgres = PostgresContainer("postgres:15", driver=None).start()
            self._stops.append(postgres.stop)
            url = postgres.get_connection_url()
        return Choice(url, "docker", version_of(url))

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Two commands resolving at once (make run and make key) must not both start a server.
        with (self.home / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield


def _cluster_requested() -> bool:
    value = os.environ.get("DEVSTACK_REDIS_CLUSTER", "").strip().lower()
    if value in ("", "0", "no", "false"):
        return False
    if value in ("1", "yes", "true"):
        return True
    msg = f"DEVSTACK_REDIS_CLUSTER must be 1 or 0, not {value!r}"
    raise ValueError(msg)


def _requested_kind() -> Kind:
    value = os.environ.get("DEVSTACK_SERVERS", "auto").strip().lower() or "auto"
    for kind in _KINDS:
        if value == kind:
            return kind
    msg = f"DEVSTACK_SERVERS must be one of {', '.join(_KINDS)}, not {value!r}"
    raise ValueError(msg)
