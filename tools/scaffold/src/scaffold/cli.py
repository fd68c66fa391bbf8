"""``scaffold``: the commands behind ``make new-consumer`` and ``make new-job``.

    scaffold new-consumer NAME [--job JOB] [--description TEXT] [--ops-port PORT]
    scaffold new-job SERVICE NAME [--handler NAME] [--description TEXT]

Both render copier templates from ``templates/`` and register the result (see
``scaffold.generate``); ``--no-sync`` leaves out locking, syncing, formatting and ``make schemas``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaffold.edits import ScaffoldError
from scaffold.generate import Report, new_consumer, new_job


def find_root(start: Path) -> Path:
    """The workspace root: the nearest directory up with ``templates/`` and a pyproject.toml."""
    for directory in (start, *start.parents):
        if (directory / "templates" / "consumer").is_dir() and (
            directory / "pyproject.toml"
        ).is_file():
            return directory
    raise ScaffoldError(f"no workspace (templates/consumer and pyproject.toml) above {start}")


def _print(report: Report) -> None:
    for path in report.created:
        print(f"  created  {path}")
    for path in report.changed:
        print(f"  changed  {path}")
    for note in report.notes:
        print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="scaffold", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="the workspace (default: found)")
    parser.add_argument("--no-sync", action="store_true", help="no lock, sync, format or schemas")
    commands = parser.add_subparsers(dest="command", required=True)
    consumer = commands.add_parser("new-consumer", help="a consumer service, from the archiver")
    consumer.add_argument("name", help="the service's name, lower case with dashes")
    consumer.add_argument("--job", help="its first job type (default: the name, underscored)")
    consumer.add_argument("--description", help="one line saying what the service does")
    consumer.add_argument("--ops-port", type=int, help="default: the next free one")
    job = commands.add_parser("new-job", help="a job in an existing service")
    job.add_argument("service", help="the service that runs the job")
    job.add_argument("name", help="the job type, lower case with underscores")
    job.add_argument("--handler", help="the handler's name (default: the job type)")
    job.add_argument("--description", help="one line saying what the job does")
    args = parser.parse_args(argv)
    try:
        root = args.root or find_root(Path.cwd())
        if args.command == "new-consumer":
            report = new_consumer(
                root,
                args.name,
                job=args.job,
                description=args.description,
                ops_port=args.ops_port,
                sync=not args.no_sync,
            )
            print(f"new consumer services/{args.name}:")
        else:
            report = new_job(
                root,
                args.service,
                args.name,
                handler=args.handler,
                description=args.description,
                sync=not args.no_sync,
            )
            print(f"new job {args.name} in services/{args.service}:")
    except ScaffoldError as error:
        print(f"scaffold: {error}", file=sys.stderr)
        return 1
    _print(report)
    print("next: `make lint` and `make test`; write the job's effect where the handler says.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
