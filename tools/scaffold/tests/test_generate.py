"""Rendering the templates into a copy of the workspace: the files, and every registration.

No lock, sync or schema export here (``sync=False``): ``test_generated_service_passes.py`` does
the whole thing, slowly, under ``make chaos``.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scaffold.edits import ScaffoldError
from scaffold.generate import free_ops_port, new_consumer, new_job

CONTRACTS = Path("libs/contracts/src/contracts")


def contracts_say(workspace: Path, code: str) -> str:
    """Run ``code`` against the copy's contracts and services (not the installed ones)."""
    paths = [workspace / CONTRACTS.parent, *sorted(workspace.glob("services/*/src"))]
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": ":".join(str(p) for p in paths)},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_new_consumer_renders_the_archivers_shape(workspace: Path) -> None:
    new_consumer(workspace, "image-thumbnailer", job="thumbnail", sync=False)

    service = workspace / "services" / "image-thumbnailer"
    package = service / "src" / "image_thumbnailer"
    for name in ("__main__.py", "app.py", "settings.py", "handlers.py", "store.py", "tables.py"):
        assert (package / name).is_file(), name
    assert (package / "migrations" / "0001_initial.py").is_file()
    assert (package / "py.typed").is_file()
    for name in ("conftest.py", "test_topology.py", "test_store.py", "test_asyncapi.py"):
        assert (service / "tests" / name).is_file(), name
    assert (service / "tests" / "test_thumbnail_job.py").is_file()
    project = tomllib.loads((service / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"image-thumbnailer": "image_thumbnailer.__main__:main"}
    assert project["tool"]["devstack"] == {
        "migrate": ["image-thumbnailer", "migrate"],
        "processes": [
            {"name": "image-thumbnailer", "command": ["image-thumbnailer"], "ops_port": 9105}
        ],
    }
    assert "ops_port: int = Field(default=9105" in (package / "settings.py").read_text()
    handlers = (package / "handlers.py").read_text()
    assert "@router.job(ThumbnailRequested)" in handlers
    assert "async def thumbnail(request: ThumbnailRequested, store: ImageThumbnailerStore)" in (
        handlers
    )


def test_new_consumer_registers_the_service_and_its_job(workspace: Path) -> None:
    new_consumer(workspace, "thumbnailer", job="thumbnail", sync=False)

    pyproject = tomllib.loads((workspace / "pyproject.toml").read_text())
    linter = pyproject["tool"]["importlinter"]
    assert "thumbnailer" in linter["root_packages"]
    for contract in linter["contracts"]:
        listed = [*contract.get("source_modules", []), *contract.get("forbidden_modules", [])]
        listed += contract.get("modules", [])
        assert ("archiver" in listed) == ("thumbnailer" in listed), contract["name"]
    assert "thumbnailer" in pyproject["tool"]["mypy"]["packages"]
    assert "services/thumbnailer/src" in pyproject["tool"]["mypy"]["mypy_path"].split(":")
    exporter = (workspace / "scripts" / "export_asyncapi.py").read_text()
    assert '"thumbnailer": "thumbnailer.handlers:router",' in exporter
    assert "| `thumbnailer` | — | 9105 |" in (workspace / "ARCHITECTURE.md").read_text()
    readme = (workspace / "README.md").read_text()
    assert "thumbnailer :9105" in readme
    assert "| `services/thumbnailer` | TODO: say what thumbnailer does." in readme
    assert (workspace / CONTRACTS / "job_thumbnail.py").is_file()

    said = contracts_say(
        workspace,
        "from contracts import CATALOGUE, Service, groups_for, job_streams\n"
        "from contracts.catalogue import _RUNTIME\n"
        "from contracts.job_thumbnail import ThumbnailRequested\n"
        "from thumbnailer.handlers import router\n"
        "rows = [(g.stream, g.group, g.handler) for g in groups_for(Service.THUMBNAILER)]\n"
        "spec = next(s for s in CATALOGUE if s.event is ThumbnailRequested)\n"
        "print(rows == [(s, 'thumbnailer', 'thumbnail') for s in job_streams('thumbnail')],\n"
        "      spec.consumers == (Service.THUMBNAILER,), Service.THUMBNAILER in _RUNTIME,\n"
        "      [r.name for r in router.routes])",
    )
    assert said == "True True True ['thumbnail']"


def test_generated_files_pass_ruff_with_the_longest_names_allowed(workspace: Path) -> None:
    service, job = "abcdefghijk-lmnopqrstuvw", "abcdefghijk_lmnopqrstuvw"  # 24 characters
    new_consumer(workspace, service, job=job, description="x" * 72, sync=False)
    new_job(workspace, service, "b" + job[1:], handler=job + "_more", description="y" * 72,
            sync=False)  # fmt: skip
    new_job(workspace, "archiver", "freeze_all", handler="freeze_all_notes", sync=False)

    for command in (["check"], ["format", "--check"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "."],
            cwd=workspace,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_new_job_in_the_archiver_uses_its_store_and_router(workspace: Path) -> None:
    report = new_job(
        workspace,
        "archiver",
        "freeze_all",
        handler="freeze_all_notes",
        description="Freeze every note of an owner.",
        sync=False,
    )

    assert Path("services/archiver/tests/test_freeze_all_job.py") in report.created
    handlers = (workspace / "services/archiver/src/archiver/handlers.py").read_text()
    assert "from contracts.job_freeze_all import FreezeAllRequested" in handlers
    assert "async def freeze_all_notes(request: FreezeAllRequested, store: ArchiveStore)" in (
        handlers
    )
    said = contracts_say(
        workspace,
        "from contracts import CATALOGUE, JobType, KNOWN_STREAMS, groups_for\n"
        "from contracts.job_freeze_all import FreezeAllRequested\n"
        "spec = next(s for s in CATALOGUE if s.event is FreezeAllRequested)\n"
        "handlers = {g.handler for g in groups_for('archiver') if g.stream in spec.streams}\n"
        "print(JobType.FREEZE_ALL, spec.purpose, handlers, 'jobs.freeze_all.low' in KNOWN_STREAMS)",
    )
    assert said == "freeze_all Freeze every note of an owner. {'freeze_all_notes'} True"


def test_registration_finds_its_place_in_files_that_lost_their_markers(workspace: Path) -> None:
    # As after a merge that kept the other side's lines: more services, no marker comments.
    for name in ("groups.py", "status.py", "streams.py", "catalogue.py"):
        path = workspace / CONTRACTS / name
        text = path.read_text()
        lines = [line for line in text.splitlines() if "# scaffold:" not in line]
        path.write_text("\n".join(lines) + "\n")
    groups = workspace / CONTRACTS / "groups.py"
    groups.write_text(groups.read_text().replace('    FANOUT = "fanout"\n', (
        '    FANOUT = "fanout"\n    INDEXER = "indexer"\n'
    )))  # fmt: skip

    new_consumer(workspace, "thumbnailer", job="thumbnail", sync=False)

    said = contracts_say(
        workspace,
        "from contracts import Service, groups_for\n"
        "from contracts.catalogue import _RUNTIME\n"
        "print(list(Service)[-2:], len(groups_for('thumbnailer')),\n"
        "      Service.THUMBNAILER in _RUNTIME)",
    )
    assert said == "[<Service.INDEXER: 'indexer'>, <Service.THUMBNAILER: 'thumbnailer'>] 3 True"
    assert "    # scaffold: new services above this line\n" in groups.read_text()


def test_ops_port_skips_ports_other_branches_claim_in_architecture_md(workspace: Path) -> None:
    architecture = workspace / "ARCHITECTURE.md"
    architecture.write_text(
        architecture.read_text().replace(
            "| `fanout` | — | 9104 |", "| `fanout` | — | 9104 |\n| `indexer` | — | 9107 |"
        )
    )
    assert free_ops_port(workspace) == 9108


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("Thumbnailer", "lower case"),
        ("a" * 25, "24 at most"),
        ("archiver", "exists already"),
        ("indexer", "already has a member"),  # declared in contracts, not on disk yet
    ],
)
def test_new_consumer_refuses_a_bad_or_taken_name(workspace: Path, name: str, error: str) -> None:
    groups = workspace / CONTRACTS / "groups.py"
    groups.write_text(groups.read_text().replace('    FANOUT = "fanout"\n', (
        '    FANOUT = "fanout"\n    INDEXER = "indexer"\n'
    )))  # fmt: skip
    with pytest.raises(ScaffoldError, match=error):
        new_consumer(workspace, name, sync=False)


def test_new_job_refuses_a_job_type_that_exists(workspace: Path) -> None:
    with pytest.raises(ScaffoldError, match="already has 'archive'"):
        new_job(workspace, "archiver", "archive", sync=False)
