"""`notes-api serve` on several processes (`SERVE_PROCESSES`): a supervisor and its servers.

One Python process serves on one core; past about half of it, requests queue behind each other
and any pause (a collection, a burst) shows in the tail. With `SERVE_PROCESSES=N` the command
binds the API's socket itself, starts N servers that accept on that one socket, and supervises
them: SIGTERM is passed on to each (each drains its in-flight requests) and the command exits 0
once all have; if one exits on its own, the others are stopped and the command exits 1, so the
orchestrator restarts the whole (no half-sized restarts hidden from it).

Each server is a whole `notes-api serve` of its own: its pool (`DATABASE_POOL_SIZE` + a
readiness probe connection, so N times that against PostgreSQL's `max_connections`), its
registry and its ops port, `OPS_PORT + i` for server i (`OPS_PORT=0`: each picks a free one).
Prometheus scrapes each ops port; the series differ by `instance`, so sums stay whole.
"""

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys

from notes_api.settings import NotesApiSettings
from servicekit import get_logger, run_until_stopped

_log = get_logger("notes_api.processes")

SOCKET_FD = "NOTES_API_SERVE_FD"
"""Set by the supervisor on each server: the descriptor of the listening socket it inherits."""
SERVER_INDEX = "NOTES_API_SERVE_INDEX"
"""Set by the supervisor on each server: its index i, for its ops port."""


def listening_socket(host: str, port: int) -> socket.socket:
    """The API's listening socket, inheritable by the servers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def inherited_socket() -> socket.socket | None:
    """The socket a supervisor handed this server, if it was started by one."""
    fd = os.environ.get(SOCKET_FD)
    return socket.socket(fileno=int(fd)) if fd else None


def server_settings(settings: NotesApiSettings) -> NotesApiSettings:
    """``settings`` for server i of a supervisor: ops port `OPS_PORT + i` (0 stays 0)."""
    index = int(os.environ.get(SERVER_INDEX, "0"))
    if index == 0 or settings.ops_port == 0:
        return settings
    return settings.model_copy(update={"ops_port": settings.ops_port + index})


def _stop_with_supervisor() -> None:
    """In a server, before it runs: SIGTERM when the supervisor dies (Linux PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def supervise(settings: NotesApiSettings) -> int:
    """Serve with `SERVE_PROCESSES` servers on one socket until SIGTERM/SIGINT; see the module."""
    sock = listening_socket(settings.host, settings.port)

    async def main(stop: asyncio.Event) -> int:
        servers = []
        for index in range(settings.serve_processes):
            env = {**os.environ, SOCKET_FD: str(sock.fileno()), SERVER_INDEX: str(index)}
            servers.append(
                # Their own session: a terminal's Ctrl-C reaches the supervisor alone, which passes
                # one SIGTERM on (a second signal would cut a server's drain short).
                await asyncio.create_subprocess_exec(
                    *(sys.executable, "-m", "notes_api", "serve"),
                    env=env,
                    pass_fds=(sock.fileno(),),
                    start_new_session=True,
                    preexec_fn=_stop_with_supervisor,
                )
            )
        _log.info("serve.processes_started", pids=[s.pid for s in servers], port=settings.port)
        exits = [asyncio.create_task(server.wait()) for server in servers]
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, *exits}, return_when=asyncio.FIRST_COMPLETED)
        crashed = not stop.is_set()
        if crashed:
            _log.error("serve.process_exited", codes=[s.returncode for s in servers])
        for server in servers:
            if server.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    server.send_signal(signal.SIGTERM)
        grace = settings.shutdown_grace_seconds + 10
        _, pending = await asyncio.wait(exits, timeout=grace)
        for server in servers:
            if server.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    server.kill()
        await asyncio.gather(*exits)
        stopping.cancel()
        sock.close()
        clean = not crashed and not pending and all(s.returncode == 0 for s in servers)
        return 0 if clean else 1

    return run_until_stopped(main)
