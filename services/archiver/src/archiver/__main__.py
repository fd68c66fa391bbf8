"""``archiver`` runs the worker; ``archiver migrate`` applies the database migrations."""

import asyncio
import sys

from archiver.app import migrate, run
from archiver.settings import ArchiverSettings
from servicekit import run_until_stopped


def main() -> int:
    settings = ArchiverSettings()
    match sys.argv[1:]:
        case []:
            return run_until_stopped(lambda stop: run(settings, stop))
        case ["migrate"]:
            return asyncio.run(migrate(settings))
        case _:
            print("usage: archiver [migrate]", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
