"""The services of the workspace and the processes each runs, read from their pyproject files.

Each service declares what ``make run`` starts in a ``[tool.devstack]`` table, so a new service is
started by ``make run`` as soon as it exists, without a change here::

    [tool.devstack]
    migrate = ["archiver", "migrate"]
    processes = [{ name = "archiver", command = ["archiver"], ops_port = 9102 }]

``command`` names a console script of the service, started with ``OPS_PORT`` set to ``ops_port``;
``port`` (optional) is its public HTTP port, passed as ``PORT``. ``DEVSTACK_PORT_OFFSET`` shifts
every port, so a second copy of the platform (a test's) can run beside ``make run``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Process", "Service", "find_root", "services"]


@dataclass(frozen=True)
class Process:
    """One long-running process of a service, ready when its ops port answers ``/readyz``."""

    name: str
    command: tuple[str, ...]
    ops_port: int
    port: int | None = None

    def shifted(self, offset: int) -> Process:
        """Return the same process with every port moved by ``offset``."""
        port = None if self.port is None else self.port + offset
        return Process(self.name, self.command, self.ops_port + offset, port)


@dataclass(frozen=True)
class Service:
    """A workspace member under ``services/`` with its migrate command and processes."""

    package: str
    migrate: tuple[str, ...] | None
    processes: tuple[Process, ...]
    migrations: Path | None = None  # the alembic directory, if the service has one


def find_root(start: Path | None = None) -> Path:
    """Return the workspace root: the nearest parent holding ``services/`` and ``uv.lock``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "uv.lock").exists() and (candidate / "services").is_dir():
            return candidate
    msg = f"no notes-platform workspace (uv.lock and services/) at or above {here}"
    raise FileNotFoundError(msg)


def services(root: Path) -> list[Service]:
    """Every service under ``root/services`` that declares ``[tool.devstack]``, by name."""
    found = []
    for pyproject in sorted((root / "services").glob("*/pyproject.toml")):
        data = tomllib.loads(pyproject.read_text())
        table = data.get("tool", {}).get("devstack")
        if not table:
            continue
        migrate = table.get("migrate")
        alembic = sorted(pyproject.parent.glob("src/*/migrations"))
        found.append(
            Service(
                package=data["project"]["name"],
                migrate=tuple(migrate) if migrate else None,
                processes=tuple(
                    Process(
                        name=entry["name"],
                        command=tuple(entry["command"]),
                        ops_port=int(entry["ops_port"]),
                        port=entry.get("port"),
                    )
                    for entry in table.get("processes", [])
                ),
                migrations=alembic[0] if alembic else None,
            )
        )
    return found
