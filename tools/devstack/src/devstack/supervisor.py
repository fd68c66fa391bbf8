"""``make run``: migrate, start every service's processes, wait until ready, say how to try it.

Every process gets the resolved ``REDIS_URL`` / ``DATABASE_URL``. When this command's stdout is a
terminal, processes log with structlog's console renderer and each line is prefixed with the
process name in a colour of its own; otherwise they write JSON lines, unprefixed, for a log
pipeline (``LOG_FORMAT`` set by the caller wins either way). Ctrl-C or SIGTERM stops the
processes (SIGTERM, then SIGKILL after the grace period), then the embedded servers it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from devstack.migrations import MigrationRecord
from devstack.resolution import Resolved
from devstack.workspace import Process, Service

__all__ = ["Supervisor"]

_COLOURS = ("\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[32m", "\x1b[34m", "\x1b[91m", "\x1b[96m")
_RESET = "\x1b[0m"
_CURL_NOTE = (
    '-H "Authorization: Bearer $NOTES_API_KEY" -H "Content-Type: application/json" '
    '-d \'{"title": "hello", "body": "first note"}\''
)
_READY_DEADLINE = 90.0
# asyncio's default of 64 KiB per line would end the relay at the first long log line (a big
# traceback), and the process would then block on a full pipe.
_LINE_LIMIT = 16 * 1024 * 1024
_STOP_GRACE = 30.0


@dataclass
class _Running:
    process: Process
    child: asyncio.subprocess.Process
    prefix: str
    relay: asyncio.Task[None] | None = field(default=None)


class Supervisor:
    """Runs the workspace's services in the foreground until stopped."""

    def __init__(
        self,
        services: list[Service],
        resolved: Resolved,
        *,
        bin_dir: Path,
        out: TextIO,
        interactive: bool,
        base_env: Mapping[str, str],
        migrations: MigrationRecord | None = None,
    ) -> None:
        self.services = services
        self.resolved = resolved
        self.bin_dir = bin_dir
        self.out = out
        self.interactive = interactive
        self.env = self._environment(base_env)
        self.migrations = migrations
        self.running: list[_Running] = []
        self._stopping = asyncio.Event()

    async def run(self, started: float) -> int:
        """Migrate, start, wait for readiness, print the block, then supervise; the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, self._stopping.set)
        try:
            if not self._ports_free():
                return 1
            if not await self._migrate():
                return 1
            await self._start_all()
            if not await self._wait_ready():
                return 1
            self._say_ready(time.monotonic() - started)
            return await self._supervise()
        finally:
            await self._stop_all()

    def _environment(self, base: Mapping[str, str]) -> dict[str, str]:
        env = {**base, **self.resolved.environment()}
        env.setdefault("LOG_FORMAT", "console" if self.interactive else "json")
        if self.interactive and env["LOG_FORMAT"] == "console" and "NO_COLOR" not in env:
            env.setdefault("FORCE_COLOR", "1")  # the child's stdout is our pipe, not a terminal
        return env

    def _ports_free(self) -> bool:
        """False (and says which) when a port a process needs already answers."""
        ports = [(p.name, port) for s in self.services for p in s.processes
                 for port in (p.ops_port, p.port) if port is not None]  # fmt: skip
        taken = [f"{name} :{port}" for name, port in ports if _port_open(port)]
        if taken:
            self._say(f"ports in use: {', '.join(taken)} (another `make run`, the compose stack?); "
                      "DEVSTACK_PORT_OFFSET moves them")  # fmt: skip
        return not taken

    def _command(self, command: tuple[str, ...]) -> list[str]:
        return [str(self.bin_dir / command[0]), *command[1:]]

    async def _migrate(self) -> bool:
        """Run every service's migrate command at once (each has its own schema and lock)."""
        database = self.resolved.postgres.url
        if self.migrations and await self.migrations.is_current(database):
            self._say("migrations unchanged since the last run, and the schemas at their versions")
            return True
        commands = [s.migrate for s in self.services if s.migrate]
        children = [
            await asyncio.create_subprocess_exec(
                *self._command(command),
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            for command in commands
        ]
        outputs = await asyncio.gather(*(child.communicate() for child in children))
        ok = True
        for command, child, (output, _) in zip(commands, children, outputs, strict=True):
            if child.returncode != 0:
                ok = False
                self._say(f"{' '.join(command)} failed (exit {child.returncode}):")
                self.out.write(output.decode(errors="replace"))
        if ok and self.migrations:
            await self.migrations.remember(database)
        return ok

    async def _start_all(self) -> None:
        processes = [p for s in self.services for p in s.processes]
        width = max(len(p.name) for p in processes)
        for index, process in enumerate(processes):
            ports = {"OPS_PORT": str(process.ops_port)}
            if process.port is not None:
                ports["PORT"] = str(process.port)
            child = await asyncio.create_subprocess_exec(
                *self._command(process.command),
                env={**self.env, **ports},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                limit=_LINE_LIMIT,
                # A session of its own: Ctrl-C reaches only this supervisor, which stops the
                # processes in order and then the servers they use.
                start_new_session=True,
            )
            prefix = ""
            if self.interactive:
                colour = _COLOURS[index % len(_COLOURS)]
                prefix = f"{colour}{process.name:<{width}} |{_RESET} "
            running = _Running(process, child, prefix)
            running.relay = asyncio.create_task(self._relay(running))
            self.running.append(running)

    async def _relay(self, running: _Running) -> None:
        stream = running.child.stdout
        assert stream is not None
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # longer than the limit: pass it on in pieces, keep reading
                line = await stream.read(_LINE_LIMIT)
            if not line:
                return
            self.out.write(running.prefix + line.decode(errors="replace"))
            self.out.flush()

    async def _wait_ready(self) -> bool:
        deadline = time.monotonic() + _READY_DEADLINE
        waiting = list(self.running)
        while waiting:
            for running in list(waiting):
                if running.child.returncode is not None:
                    self._say(f"{running.process.name} exited ({running.child.returncode}) "
                              "before it was ready; its log is above")  # fmt: skip
                    return False
                if await _answers_ready(running.process.ops_port):
                    waiting.remove(running)
            if self._stopping.is_set():
                return False
            if time.monotonic() > deadline:
                names = ", ".join(r.process.name for r in waiting)
                self._say(f"not ready after {_READY_DEADLINE:.0f} s: {names}")
                return False
            if waiting:
                await asyncio.sleep(0.05)
        return True

    def _say_ready(self, elapsed: float) -> None:
        port = next((p.port for s in self.services for p in s.processes if p.port), None)
        api = f"http://127.0.0.1:{port}" if port else None
        ops = ", ".join(f"{r.process.name} :{r.process.ops_port}" for r in self.running)
        grafana = "  Grafana     http://127.0.0.1:3000" if _port_open(3000) else None
        lines = [
            f"notes-platform is up ({elapsed:.1f} s).",
            f"  API         {api}  (OpenAPI at {api}/docs)" if api else None,
            f"  ops ports   {ops}  (/metrics /healthz /readyz /asyncapi.json)",
            f"  Redis       {self.resolved.redis.describe()}",
            f"  PostgreSQL  {self.resolved.postgres.describe()}",
            grafana,  # the compose stack's, when it is up
            "Try it from another terminal, in this directory:",
            "  export NOTES_API_KEY=$(make -s key owner=you)",
            f"  curl -s {api}/v1/notes {_CURL_NOTE}" if api else None,
            "More in docs/api.md. Ctrl-C stops everything.",
        ]
        self._say("\n".join(line for line in lines if line is not None), plain=True)

    async def _supervise(self) -> int:
        exits = {asyncio.ensure_future(r.child.wait()): r for r in self.running}
        stopping = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait({*exits, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        for future in exits:
            future.cancel()
        crashed = [exits[f] for f in done if f in exits]
        for running in crashed:
            self._say(f"{running.process.name} exited ({running.child.returncode}); stopping all")
        return 1 if crashed else 0

    async def _stop_all(self) -> None:
        alive = [r for r in self.running if r.child.returncode is None]
        if alive:
            self._say(f"stopping {len(alive)} processes")
        for running in alive:
            with contextlib.suppress(ProcessLookupError):
                running.child.send_signal(signal.SIGTERM)
        for running in alive:
            try:
                await asyncio.wait_for(running.child.wait(), _STOP_GRACE)
            except TimeoutError:
                self._say(f"{running.process.name} did not stop in {_STOP_GRACE:.0f} s; killing it")
                running.child.kill()
                await running.child.wait()
        for running in self.running:
            if running.relay:
                await running.relay

    def _say(self, text: str, *, plain: bool = False) -> None:
        if self.interactive and not plain:
            text = f"\x1b[1mmake run:{_RESET} {text}"
        elif not plain:
            text = f"make run: {text}"
        print(text, file=self.out, flush=True)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _answers_ready(port: int) -> bool:
    """True when ``GET /readyz`` on the ops port answers 200."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 2)
        return status.split()[1:2] == [b"200"]
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
