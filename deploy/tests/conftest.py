"""deploy/ is not a package: its scripts (stack.py, dashboards/) are imported from their folders."""

from __future__ import annotations

import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent
for folder in (DEPLOY, DEPLOY / "dashboards", DEPLOY / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
