"""A throwaway redis-server loaded with the stack's ACL file (deploy/redis/users.acl.template)."""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stack import ROOT, TARGETS

TEMPLATE = ROOT / "deploy" / "redis" / "users.acl.template"


def password(user: str) -> str:
    """The test password of an ACL user (the template's placeholders, filled in)."""
    return f"{user}-test-pw"


@dataclass(frozen=True)
class AclRedis:
    port: int

    def url(self, user: str) -> str:
        return f"redis://{user}:{password(user)}@127.0.0.1:{self.port}/0"

    def refusals(self) -> list[str]:
        """Redis's ACL log, one line per refused (user, command, key) with its count."""
        import redis

        with redis.Redis.from_url(self.url("admin")) as client:
            entries = client.acl_log(100)
        found = set()
        for entry in entries:
            command = re.search(r"cmd=(\S+)", str(entry.get("client-info", "")))
            found.add(
                f"{entry.get('username')}: {command.group(1) if command else '?'} "
                f"{entry.get('object')} ({entry.get('reason')}, {entry.get('count')}x)"
            )
        return sorted(found)

    def cli(self, *args: str, user: str = "admin") -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), "--user", user, "--pass", password(user),
             "--no-auth-warning", *args],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip


def _server_version() -> tuple[int, ...]:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    found = re.search(r"v=(\d+)\.(\d+)", out)
    return tuple(int(n) for n in found.groups()) if found else (0, 0)


def render_acl() -> str:
    """The ACL file with test passwords, as start.sh renders it (``#`` lines dropped: Redis takes
    no comments there); WAITAOF (Redis 7.2+) dropped on an older server."""
    placeholders = {"REDIS_ADMIN": "admin", "CONSOLE_REDIS": "console"} | {
        f"{t.name.upper().replace('-', '_')}_REDIS": t.name for t in TARGETS
    }
    template = "".join(
        line for line in TEMPLATE.read_text().splitlines(keepends=True) if not line.startswith("#")
    )
    acl = re.sub(r"@([A-Z_]+)_PASSWORD@", lambda m: password(placeholders[m.group(1)]), template)
    if _server_version() < (7, 2):
        acl = acl.replace(" +waitaof", "")
    return acl


@contextmanager
def acl_redis(folder: Path) -> Iterator[AclRedis]:
    """Start redis-server on a free port with the rendered ACL file; stop it afterwards."""
    (folder / "users.acl").write_text(render_acl())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = folder / "redis.log"
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder), "--aclfile", str(folder / "users.acl"),
         "--logfile", str(log)],
    )  # fmt: skip
    redis = AclRedis(port)
    try:
        deadline = time.monotonic() + 10
        while redis.cli("PING") != "PONG":
            assert server.poll() is None, f"redis-server refused the ACL file: {log.read_text()}"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield redis
    finally:
        server.terminate()
        server.wait(timeout=10)
