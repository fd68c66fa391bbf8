"""`python -m notes_api`: the same as the `notes-api` command."""

import sys

from notes_api.cli import main

sys.exit(main())
