"""The platform's processes as subprocesses the test controls one by one.

Which processes exist, their commands and their migrate commands come from each service's
``[tool.devstack]`` table (``devstack.workspace``, what ``make run`` starts), so a new service is
in every e2e platform as soon as it declares itself there. Each process gets a free ``OPS_PORT``
(readiness is its ``/readyz``), its own ``CONSUMER_NAME`` and a log file ``<logs>/<id>.log``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx

from devstack.workspace import Process, find_root, services
from harness.polling import poll
from harness.processes import die_with_parent, tail
from servicekit.testing import free_port

if TYPE_CHECKING:
    import redis

    from harness.otlp import OtlpReceiver
    from harness.postgres_server import PrivatePostgres
    from harness.redis_server import PrivateRedis

__all__ = ["API", "Platform", "catalogue"]

BIN = Path(sys.executable).parent
ROOT = find_root(Path(__file__).parent)
API = "notes-api"
"""The process that serves the public HTTP API (``PORT``)."""
_READY_WITHIN = 90.0  # a loaded 2-core machine starting five Python processes at once
_STOP_WITHIN = 60.0


def catalogue() -> dict[str, Process]:
    """Every process of the workspace's services, by name."""
    return {p.name: p for s in services(ROOT) for p in s.processes}


def _migrations() -> list[tuple[str, ...]]:
    return [s.migrate for s in services(ROOT) if s.migrate]


@dataclass
class _Running:
    name: str
    replica: int
    ops_port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    extra_env: dict[str, str] = field(default_factory=dict)
    paused: bool = False


class Platform:
    """Starts, stops, kills, pauses and restarts the platform's processes.

    ``env`` is every process's environment (over ``os.environ``): ``REDIS_URL``,
    ``DATABASE_URL``, ``STREAM_PREFIX``, ``OTEL_*``...; ``service_env`` adds per-process
    variables (a Redis user each, say). ``redis``/``postgres``/``otlp`` are the private servers
    behind ``env``, when the test owns them (``private_platform`` sets them). Use as a context
    manager: leaving it stops every process, also when the test failed, and a failure prints the
    tail of each log.
    """

    live: weakref.WeakSet[Platform] = weakref.WeakSet()
    """Platforms not yet closed (the e2e conftest adds their log tails to a failed test)."""

    def __init__(
        self,
        env: Mapping[str, str],
        logs_dir: Path,
        *,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        redis: PrivateRedis | None = None,
        postgres: PrivatePostgres | None = None,
        otlp: OtlpReceiver | None = None,
    ) -> None:
        self.env = dict(env)
        self.logs = logs_dir
        self.logs.mkdir(parents=True, exist_ok=True)
        self.service_env = {k: dict(v) for k, v in (service_env or {}).items()}
        self.redis, self.postgres, self.otlp = redis, postgres, otlp
        self.catalogue = catalogue()
        self.api_port = free_port()
        self.processes: dict[str, _Running] = {}
        Platform.live.add(self)

    # -- addresses -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """notes-api's public HTTP address."""
        return f"http://127.0.0.1:{self.api_port}"

    def ops_url(self, process_id: str) -> str:
        """The ops address (``/metrics``, ``/healthz``, ``/readyz``) of a running process."""
        return f"http://127.0.0.1:{self.processes[process_id].ops_port}"

    def process_env(self, name: str) -> dict[str, str]:
        """What process ``name`` (and its tools, e.g. ``create-key``) run with."""
        return {**os.environ, **self.env, **self.service_env.get(name, {})}

    # -- processes -------------------------------------------------------------------------

    def migrate(self) -> None:
        """Run every service's migrate command (at once), each to a zero exit."""
        env = {**os.environ, **self.env}
        running = []
        for command in _migrations():
            log = (self.logs / f"migrate-{command[0]}.log").open("ab")
            running.append(
                (
                    command,
                    subprocess.Popen(
                        [str(BIN / command[0]), *command[1:]], env=env, stdout=log, stderr=log
                    ),
                    log,
                )
            )
        failed = []
        for command, process, log in running:
            code = process.wait(timeout=120)
            log.close()
            if code != 0:
                failed.append(f"{' '.join(command)} exited {code}:\n{tail(Path(log.name))}")
        assert not failed, "\n".join(failed)

    def start(self, name: str, *, replica: int = 0, wait: bool = True, **extra_env: str) -> str:
        """Start process ``name`` (replica ``replica``: ``<name>.<replica>`` for replica > 0).

        ``extra_env`` is added to its environment (and kept by ``restart``). Returns the process
        id that ``stop``/``kill``/``pause`` take; waits for ``/readyz`` unless ``wait`` is False.
        """
        spec = self.catalogue.get(name)
        assert spec is not None, f"no process {name!r}; the platform has {sorted(self.catalogue)}"
        process_id = name if replica == 0 else f"{name}.{replica}"
        assert process_id not in self.processes, f"{process_id} already runs"
        ops_port = free_port()
        env = {
            **self.process_env(name),
            "OPS_PORT": str(ops_port),
            "OPS_HOST": "127.0.0.1",
            "CONSUMER_NAME": f"e2e-{process_id}",
        }
        if spec.port is not None:  # the public API: the platform's port for replica 0
            env["PORT"] = str(self.api_port if replica == 0 else free_port())
            env["HOST"] = "127.0.0.1"
        env.update(extra_env)
        with (self.logs / f"{process_id}.log").open("ab") as log:
            process = subprocess.Popen(
                [str(BIN / spec.command[0]), *spec.command[1:]],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(),
            )
        self.processes[process_id] = _Running(name, replica, ops_port, env, process, extra_env)
        if wait:
            self.wait_ready(process_id)
        return process_id

    def start_all(self, names: Iterable[str] | None = None) -> None:
        """Start ``names`` (every process by default) together, then wait until each is ready."""
        started = [self.start(name, wait=False) for name in (names or self.catalogue)]
        for process_id in started:
            self.wait_ready(process_id)

    def ready(self, process_id: str) -> bool:
        """True when the process's ``/readyz`` answers 200."""
        return self._ops_status(process_id, "/readyz") == 200

    def wait_ready(self, process_id: str, within: float = _READY_WITHIN) -> None:
        """Wait for ``/readyz`` 200; fail at once, with its log, if the process exits."""
        running = self.processes[process_id]

        def ready() -> bool:
            code = running.process.poll()
            if code is not None:
                raise AssertionError(
                    f"{process_id} exited {code} while starting:\n{self.log_tail(process_id)}"
                )
            return self.ready(process_id)

        poll(ready, within, f"{process_id} ready", every=0.1,
             seen=lambda: self.log_tail(process_id, 15))  # fmt: skip

    def metrics(self, process_id: str) -> str:
        """The process's ``/metrics`` text."""
        with urllib.request.urlopen(self.ops_url(process_id) + "/metrics", timeout=5) as r:
            return str(r.read().decode())

    def _ops_status(self, process_id: str, path: str) -> int:
        try:
            with urllib.request.urlopen(self.ops_url(process_id) + path, timeout=1) as r:
                return int(r.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            return 0

    def stop(
        self, process_id: str, sig: signal.Signals = signal.SIGTERM, within: float = _STOP_WITHIN
    ) -> int:
        """Send ``sig`` (a paused process is resumed first) and return the exit code."""
        running = self.processes.pop(process_id)
        if running.paused and sig != signal.SIGKILL:
            running.process.send_signal(signal.SIGCONT)
        running.process.send_signal(sig)
        return running.process.wait(timeout=within)

    def kill(self, process_id: str) -> int:
        """SIGKILL the process; returns -9."""
        return self.stop(process_id, signal.SIGKILL)

    def pause(self, process_id: str) -> None:
        """SIGSTOP: the process holds its connections and leases but does nothing."""
        running = self.processes[process_id]
        running.process.send_signal(signal.SIGSTOP)
        running.paused = True

    def resume(self, process_id: str) -> None:
        """SIGCONT a paused process."""
        running = self.processes[process_id]
        running.process.send_signal(signal.SIGCONT)
        running.paused = False

    def restart(self, process_id: str, *, wait: bool = True, **extra_env: str) -> int | None:
        """Stop the process (SIGTERM) if it runs, start it again; returns the stop's exit code.

        A process id that is not running (killed earlier) is started from its name.
        """
        running = self.processes.get(process_id)
        code = self.stop(process_id) if running else None
        name, _, replica = process_id.partition(".")
        env = {**(running.extra_env if running else {}), **extra_env}
        self.start(name, replica=int(replica or 0), wait=wait, **env)
        return code

    def pid(self, process_id: str) -> int:
        """The OS process id (for psutil, say)."""
        return self.processes[process_id].process.pid

    # -- what tests use ------------------------------------------------------------------

    def create_key(self, owner: str) -> str:
        """A new API key for ``owner``, made by notes-api's own ``create_key`` (what
        ``notes-api create-key`` runs) in this process: a subprocess would cost each test a
        Python start and notes-api's imports (3 s on a loaded machine)."""
        from sqlalchemy.ext.asyncio import create_async_engine

        from notes_api.auth import create_key
        from servicekit.settings import asyncpg_url

        async def run() -> str:
            engine = create_async_engine(asyncpg_url(self.env["DATABASE_URL"]))
            try:
                return (await create_key(engine, owner))[1]
            finally:
                await engine.dispose()

        return asyncio.run(run())

    def client(self, key: str, timeout: float = 30.0) -> httpx.Client:
        """An HTTP client on notes-api that sends ``key`` as its bearer token."""
        return httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

    def sql(self, query: str, *args: Any) -> Any:
        """``fetchval`` of one query on the platform's database (None for a statement)."""
        return self._database(lambda connection: connection.fetchval(query, *args))

    def rows(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Every row of one query on the platform's database."""
        return self._database(lambda connection: connection.fetch(query, *args))  # type: ignore[no-any-return]

    def _database(self, use: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        async def run() -> Any:
            connection = await asyncpg.connect(self.env["DATABASE_URL"])
            try:
                return await use(connection)
            finally:
                await connection.close()

        return asyncio.run(run())

    def redis_client(self) -> redis.Redis:
        """A redis-py client as the platform's ``REDIS_URL`` (the admin, under ACLs)."""
        import redis

        ca = self.env.get("REDIS_CA_CERT")
        options = {"ssl_ca_certs": ca} if ca and self.env["REDIS_URL"].startswith("rediss") else {}
        return redis.Redis.from_url(self.env["REDIS_URL"], **options)

    # -- logs and teardown ---------------------------------------------------------------

    def log_tail(self, process_id: str, lines: int = 40) -> str:
        """The end of a process's log."""
        return tail(self.logs / f"{process_id}.log", lines)

    def log_tails(self, lines: int = 25) -> str:
        """The end of every log of this platform (processes, migrations, servers)."""
        logs = sorted(self.logs.glob("*.log"))
        parts = [f"--- {log.stem} ---\n{tail(log, lines)}" for log in logs]
        if self.redis is not None:
            parts.append(f"--- redis-server ---\n{tail(self.redis.log, lines)}")
        if self.postgres is not None:
            parts.append(f"--- postgres ---\n{self.postgres.log_tail(lines)}")
        return "\n".join(parts)

    def close(self) -> dict[str, int]:
        """SIGTERM every running process at once; return their exit codes (0: clean shutdown).

        A process that has not exited after the grace period is killed (its code is then -9).
        """
        for running in self.processes.values():
            if running.paused:
                running.process.send_signal(signal.SIGCONT)
            if running.process.poll() is None:
                running.process.send_signal(signal.SIGTERM)
        codes = {}
        for process_id, running in self.processes.items():
            try:
                codes[process_id] = running.process.wait(timeout=_STOP_WITHIN)
            except subprocess.TimeoutExpired:
                running.process.kill()
                codes[process_id] = running.process.wait()
        self.processes.clear()
        Platform.live.discard(self)
        return codes

    def __enter__(self) -> Platform:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is not None and not isinstance(error, KeyboardInterrupt):
            print(f"platform logs at {self.logs}:\n{self.log_tails()}", file=sys.stderr)
        self.close()
