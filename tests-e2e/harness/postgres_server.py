"""A private PostgreSQL cluster the test owns: it can be stopped, killed and started again.

The cluster is made with ``initdb`` and run with ``pg_ctl`` from the machine's PostgreSQL
(``/usr/lib/postgresql/<version>/bin``, the newest; else the ones on PATH). PostgreSQL refuses to
run as root, so as root both run as the ``postgres`` user through ``runuser``, and the cluster
lives in a directory of its own under the system temp directory (pytest's temp directories are
private to root). ``fsync=off``: a killed server loses nothing the kernel has (what the chaos
tests do); only a machine crash would, and no test crashes the machine.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psutil

from harness.processes import tail
from servicekit.testing import create_database, free_port, with_database

__all__ = ["PrivatePostgres", "postgres_binaries"]

_SYSTEM_USER = "postgres"


def postgres_binaries() -> Path:
    """The directory of ``initdb``/``pg_ctl``: the newest Debian cluster version, else PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    msg = "no initdb under /usr/lib/postgresql/*/bin nor on PATH: install postgresql"
    raise RuntimeError(msg)


class PrivatePostgres:
    """A PostgreSQL cluster on a free port; ``start()`` after ``stop()``/``kill()`` keeps data.

    ``directory`` is where a non-root run keeps the cluster; ``remove()`` deletes it (and the
    root run's own directory) once the test is done with it.
    """

    def __init__(self, directory: Path) -> None:
        self.as_user = _SYSTEM_USER if os.geteuid() == 0 else None
        if self.as_user:
            # The postgres user must reach the data directory through every parent.
            self.home = Path(tempfile.mkdtemp(prefix="e2e-postgres-"))
            entry = pwd.getpwnam(self.as_user)
            os.chown(self.home, entry.pw_uid, entry.pw_gid)
        else:
            self.home = directory / "postgres"
            self.home.mkdir(parents=True, exist_ok=True)
        self.data = self.home / "data"
        self.log = self.home / "postgres.log"
        self.bin = postgres_binaries()
        self.port = 0  # chosen at the first start, kept afterwards

    @property
    def admin_url(self) -> str:
        """The superuser's URL on the ``postgres`` database (trust auth on 127.0.0.1)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        """The superuser's URL on ``database``."""
        return with_database(self.admin_url, database)

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        return asyncio.run(create_database(self.admin_url, name))

    def start(self) -> None:
        """initdb on the first call, then start the cluster; returns once it accepts connections."""
        if not (self.data / "PG_VERSION").exists():
            init = ["--auth=trust", "-U", "postgres", "--encoding=UTF8", "--no-locale", "--no-sync"]
            self._run("initdb", "-D", str(self.data), *init)
        if not self.port:
            self.port = free_port()
        options = [
            f"-p {self.port}", "-h 127.0.0.1", "-c unix_socket_directories=''",
            "-c fsync=off", "-c max_connections=200",
        ]  # fmt: skip
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", " ".join(options),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Fast shutdown (open transactions are rolled back), waiting for the server to exit."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend, as a crash would; wait until they are gone."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        try:
            postmaster = psutil.Process(pid)
            processes = [postmaster, *postmaster.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(processes, timeout=30)
        assert not alive, f"PostgreSQL processes survived SIGKILL: {alive}"

    @property
    def running(self) -> bool:
        """True while the postmaster of this cluster lives."""
        pid = self._postmaster_pid()
        return pid is not None and psutil.pid_exists(pid)

    def remove(self) -> None:
        """Kill the cluster if it still runs and delete its files."""
        self.kill()
        shutil.rmtree(self.home, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log."""
        return tail(self.log, lines)

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.as_user:
            command = ["runuser", "-u", self.as_user, "--", *command]
        result = subprocess.run(
            command, cwd=self.home, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if result.returncode != 0:
            msg = (
                f"{program} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n"
                f"{self.log_tail()}"
            )
            raise RuntimeError(msg)
