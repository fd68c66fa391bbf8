"""Does a server answer at a URL, and what is it? Short timeouts: a probe never hangs a command."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis import Redis
from redis.exceptions import RedisError

__all__ = ["hide_password", "postgres_version", "redis_version"]


def hide_password(url: str) -> str:
    """Return ``url`` with its password replaced by ``***`` (what the commands print)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def redis_version(url: str, timeout: float = 1.0) -> str | None:
    """Return e.g. ``"Redis 7.0.15"`` or ``"Valkey 8.1.8"`` if ``url`` answers, else None.

    For a ``redis+cluster://`` URL the node it names is asked, and `` cluster`` is appended.
    """
    for scheme in ("redis+cluster://", "rediss+cluster://"):
        if url.startswith(scheme):
            seed = scheme.replace("+cluster", "") + url[len(scheme) :]
            version = redis_version(seed, timeout)
            return None if version is None else f"{version} cluster"
    client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        info = client.info("server")
    except (RedisError, OSError):
        return None
    finally:
        client.close()
    if info.get("server_name") == "valkey" or "valkey_version" in info:
        return f"Valkey {info.get('valkey_version', info.get('redis_version'))}"
    return f"Redis {info['redis_version']}"


def postgres_version(url: str, timeout: float = 2.0) -> str | None:
    """Return e.g. ``"PostgreSQL 15.19"`` if ``url`` accepts a connection, else None."""

    async def ask() -> str:
        connection = await asyncpg.connect(url, timeout=timeout)
        try:
            version = str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()
        return f"PostgreSQL {version.split()[0]}"  # "15.19 (Debian 15.19-0+deb12u1)" -> 15.19

    try:
        return asyncio.run(asyncio.wait_for(ask(), timeout + 1))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None
