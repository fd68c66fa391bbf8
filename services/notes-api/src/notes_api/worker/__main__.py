"""`notes-api-worker`: run the worker until SIGTERM, or an operator command (see `cli`)."""

import sys

from notes_api.worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
