"""`notes-api-worker`: run the worker until SIGTERM."""

import sys

from servicekit import run_until_stopped


def main() -> int:
    from notes_api.worker.app import run

    return run_until_stopped(run)


if __name__ == "__main__":
    sys.exit(main())
