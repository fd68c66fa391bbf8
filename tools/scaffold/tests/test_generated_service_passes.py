"""The whole promise, slowly (``make chaos``): generate, lock, sync, lint and test a new service.

In a copy of the workspace with a virtualenv of its own: ``scaffold new-consumer`` and
``scaffold new-job`` as a developer runs them (through ``make``'s ``scaffold``), then ``make lint``
and the tests of the new service and of the packages that check every service (contracts, the
devstack workspace test, the deploy stack's consistency tests, which hold compose, the ACL file and
the image workflow to ``deploy/stack.py``'s ``TARGETS``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import copy_workspace


def run(workspace: Path, *command: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["UV_PROJECT_ENVIRONMENT"] = str(workspace / ".venv")  # never the live tree's
    done = subprocess.run(
        command, cwd=workspace, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"


@pytest.mark.chaos
@pytest.mark.timeout(900)
@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not on PATH")
def test_a_generated_consumer_and_job_pass_lint_and_tests(tmp_path: Path) -> None:
    workspace = copy_workspace(tmp_path / "workspace")
    scaffold = Path(sys.executable).parent / "scaffold"

    run(workspace, str(scaffold), "new-consumer", "thumbnailer", "--job", "thumbnail")
    run(workspace, str(scaffold), "new-job", "thumbnailer", "resize_image")

    assert (workspace / "docs" / "asyncapi" / "thumbnailer.yaml").is_file()
    assert (workspace / "docs" / "events" / "jobs.resize_image.requested.v1.json").is_file()
    acl = (workspace / "deploy" / "redis" / "users.acl.template").read_text()
    assert "~{jobs.thumbnail}* ~{jobs.resize_image}*" in acl, "new-job widened its ACL user"
    run(workspace, "make", "lint")
    run(
        workspace,
        str(workspace / ".venv" / "bin" / "pytest"),
        "-q",
        "-m",
        "not chaos",
        "-p",
        "no:cacheprovider",
        "services/thumbnailer",
        "libs/contracts",
        "tools/devstack/tests/test_workspace.py",
        "deploy/tests/test_stack.py",
    )
