"""What a benchmark ran on: cores, load, the servers' and the packages' versions.

A figure means little without the machine behind it, so the report carries it: printed at the
top and written as the row ``machine_cpu_count`` (its ``detail`` holds the rest), which keeps
``.bench/results.json`` the list of rows the runtime issue specified.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

import asyncpg
from redis.asyncio import Redis

from bench.report import Row

PACKAGES = (
    "redis",
    "hiredis",
    "faststream",
    "fastapi",
    "uvicorn",
    "uvloop",
    "sqlalchemy",
    "sqlmodel",
    "asyncpg",
    "pydantic",
    "opentelemetry-sdk",
)


def _package_versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


async def _redis_server(url: str) -> str:
    redis = Redis.from_url(url)
    try:
        info = await redis.info("server")
    except Exception as exc:  # the report still names what it could not reach
        return f"unreachable ({type(exc).__name__})"
    finally:
        await redis.aclose()
    # Valkey answers with a valkey_version beside the redis_version it stays compatible with.
    if "valkey_version" in info:
        return f"valkey {info['valkey_version']}"
    return f"redis {info.get('redis_version', '?')}"


async def _postgres_server(url: str | None) -> str:
    if not url:
        return "not configured (DATABASE_URL unset)"
    try:
        connection = await asyncpg.connect(url, timeout=5)
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    try:
        return str(await connection.fetchval("SHOW server_version"))
    finally:
        await connection.close()


async def describe(redis_url: str, database_url: str | None) -> dict[str, Any]:
    """Return the machine, its load, the servers' versions and the packages' versions."""
    return {
        "cpu_count": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis_server": await _redis_server(redis_url),
        "postgresql_server": await _postgres_server(database_url),
        "packages": _package_versions(),
    }


def summary(machine: dict[str, Any]) -> str:
    """One line for the top of the printed report."""
    packages = machine["packages"]
    return (
        f"machine: {machine['cpu_count']} CPUs, load {'/'.join(map(str, machine['load_avg']))}, "
        f"Python {machine['python']}, {machine['redis_server']}, "
        f"PostgreSQL {machine['postgresql_server']}; redis-py {packages['redis']}, "
        f"hiredis {packages['hiredis']}, faststream {packages['faststream']}, "
        f"fastapi {packages['fastapi']}, sqlalchemy {packages['sqlalchemy']}"
    )


def row(machine: dict[str, Any]) -> Row:
    """The machine as a results row: the core count, with everything else in ``detail``."""
    return Row("machine_cpu_count", float(machine["cpu_count"] or 0), "cores", detail=machine)
