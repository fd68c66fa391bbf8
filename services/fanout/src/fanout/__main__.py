"""``fanout`` runs the worker; ``fanout migrate`` applies the database migrations."""

import asyncio
import sys

from fanout.app import migrate, run
from fanout.settings import FanoutSettings
from servicekit import run_until_stopped


def main() -> int:
    settings = FanoutSettings()
    match sys.argv[1:]:
        case []:
            return run_until_stopped(lambda stop: run(settings, stop))
        case ["migrate"]:
            return asyncio.run(migrate(settings))
        case _:
            print("usage: fanout [migrate]", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
