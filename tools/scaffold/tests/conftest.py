"""A copy of the workspace to generate into: the files git knows, without .venv or caches."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from scaffold.cli import find_root

ROOT = find_root(Path(__file__).parent)
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", ".local", ".bench", "__pycache__", ".*_cache", "node_modules"
)


def copy_workspace(target: Path) -> Path:
    """Copy the checkout's tracked and new files (what a commit would hold) to ``target``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:  # not a git checkout: everything but the usual clutter
        shutil.copytree(ROOT, target, ignore=IGNORED, dirs_exist_ok=True)
        return target
    for name in listed.stdout.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A fresh copy of the workspace under the test's temporary directory."""
    return copy_workspace(tmp_path / "workspace")
