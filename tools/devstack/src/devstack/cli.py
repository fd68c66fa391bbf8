"""``devstack``: the developer entry points behind ``make run``, ``make key`` and ``make bench``.

- ``devstack run``: migrate and start every service (``make run``);
- ``devstack exec -- CMD ...``: run CMD with REDIS_URL / DATABASE_URL resolved (``make key``);
- ``devstack env``: print the resolved variables as shell ``export`` lines;
- ``devstack stop``: stop the embedded servers under .local/ (``make run`` does so on exit).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from devstack.embedded import EmbeddedPostgres, EmbeddedValkey
from devstack.migrations import MigrationRecord
from devstack.resolution import ServerStack
from devstack.supervisor import Supervisor
from devstack.workspace import find_root, services

# When run through `uv run`, the services' console scripts sit beside this interpreter.
_BIN = Path(sys.executable).parent


def _say(text: str) -> None:
    print(f"devstack: {text}", file=sys.stderr, flush=True)


def run(root: Path) -> int:
    """``make run``: the platform in the foreground until Ctrl-C."""
    started = time.monotonic()
    interactive = sys.stdout.isatty()
    (root / ".local").mkdir(exist_ok=True)
    with (root / ".local" / "run.lock").open("w") as lock:
        # One `make run` per checkout: it adopts (and stops) the embedded servers it finds, which
        # is right only for those a killed run left behind. The kernel drops the lock on death.
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say("another `make run` is running in this checkout; stop it first")
            return 1
        return _run_locked(root, started, interactive=interactive)


def _run_locked(root: Path, started: float, *, interactive: bool) -> int:
    # SIGTERM, and SIGHUP (the terminal closed), stop the platform as Ctrl-C does; by default they
    # would end the process without its cleanup.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    stack = ServerStack.for_workspace(root, adopt=True)
    try:
        resolved = stack.resolve()
        print(f"make run: {resolved.describe()}", flush=True)
        offset = int(os.environ.get("DEVSTACK_PORT_OFFSET", "0"))
        declared = [
            replace(s, processes=tuple(p.shifted(offset) for p in s.processes))
            for s in services(root)
        ]
        # No skipping for a service whose migrations the record cannot see.
        unseen = any(s.migrate and not s.migrations for s in declared)
        record = (
            None
            if unseen
            else MigrationRecord(
                root / ".local" / "migrations.json",
                [s.migrations for s in declared if s.migrations],
            )
        )
        supervisor = Supervisor(
            declared, resolved, bin_dir=_BIN, out=sys.stdout,
            interactive=interactive, base_env=os.environ, migrations=record,
        )  # fmt: skip
        return asyncio.run(supervisor.run(started))
    except KeyboardInterrupt:
        return 130
    finally:
        # An impatient second Ctrl-C must not cut the servers' shutdown short.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        stack.close()


def execute(root: Path, command: Sequence[str]) -> int:
    """Run ``command`` with the servers resolved; embedded ones it had to start stop afterwards."""
    if not command:
        _say("exec needs a command: devstack exec -- notes-api create-key --owner you")
        return 2
    with ServerStack.for_workspace(root) as stack:
        resolved = stack.resolve()
        _say(resolved.describe())
        if stack.started_any():
            _say("nothing was running, so these servers were started for this command alone and "
                 "stop after it; `make run` keeps them up (and migrates)")  # fmt: skip
        env = {**os.environ, **resolved.environment()}
        program = _BIN / command[0]
        argv = [str(program) if program.exists() else command[0], *command[1:]]
        code = subprocess.run(argv, env=env, check=False).returncode  # noqa: S603
        return 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N


def print_environment(root: Path) -> int:
    """``export`` lines for a shell; only servers that keep running (env, local, or make run's)."""
    with ServerStack.for_workspace(root) as stack:
        resolved = stack.resolve()
        if stack.started_any():
            _say("no server was running, so these embedded ones stop again now; start `make run`")
            return 1
        for name, value in resolved.environment().items():
            print(f"export {name}={shlex.quote(value)}")
    return 0


def stop(root: Path) -> int:
    """Stop embedded servers left under ``.local/`` (by a ``make run`` that was killed)."""
    home = root / ".local"
    EmbeddedValkey(home / "valkey", durable=True).stop()
    EmbeddedPostgres(home / "postgres", durable=True).stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``devstack`` console script."""
    parser = argparse.ArgumentParser(
        prog="devstack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="migrate and start every service in the foreground")
    run_one = commands.add_parser("exec", help="run a command with the servers resolved")
    run_one.add_argument("argv", nargs=argparse.REMAINDER)
    commands.add_parser("env", help="print export lines for the resolved servers")
    commands.add_parser("stop", help="stop the embedded servers under .local/")
    args = parser.parse_args(argv)
    root = find_root()
    try:
        if args.command == "run":
            return run(root)
        if args.command == "exec":
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            return execute(root, command)
        if args.command == "env":
            return print_environment(root)
        return stop(root)
    except (RuntimeError, ValueError, FileNotFoundError) as error:
        _say(str(error))
        return 1
