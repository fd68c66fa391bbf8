"""The archiver's AsyncAPI document: what it reads (streams, group, event schemas) and writes."""

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from archiver.handlers import router
from contracts import Service, groups_for
from servicekit.asyncapi import asyncapi_document

ROOT = Path(__file__).parents[3]


def channels(document: dict[str, Any], method: str) -> dict[str, dict[str, Any]]:
    return {
        c["address"]: c
        for c in document["channels"].values()
        if c["bindings"]["redis"]["method"] == method
    }


def schema_of(document: dict[str, Any], channel: dict[str, Any]) -> str:
    (reference,) = channel["messages"].values()
    message = document["components"]["messages"][reference["$ref"].rsplit("/", 1)[1]]
    return str(message["payload"]["$ref"].rsplit("/", 1)[1])


def test_document_lists_the_streams_the_archiver_reads_with_its_group_and_schemas() -> None:
    document = asyncapi_document(str(Service.ARCHIVER), router.routes)

    read = channels(document, "xreadgroup")
    assert set(read) == {g.stream for g in groups_for(Service.ARCHIVER)}
    assert {c["bindings"]["redis"]["groupName"] for c in read.values()} == {"archiver"}
    assert schema_of(document, read["notes.created.v1"]) == "NoteCreated"
    assert schema_of(document, read["notes.deleted.v1"]) == "NoteDeleted"
    assert schema_of(document, read["jobs.archive.default"]) == "ArchiveRequested"
    assert schema_of(document, read["jobs.copy.low"]) == "CopyRequested"
    schemas = document["components"]["schemas"]
    assert {"note_id", "owner_id", "version"} <= set(schemas["ArchiveRequested"]["properties"])
    assert "NoteSnapshot" in schemas  # nested models are components too


def test_document_lists_the_streams_the_archiver_writes() -> None:
    document = asyncapi_document(str(Service.ARCHIVER), router.routes)

    written = channels(document, "xadd")
    assert set(written) == {"notes.archived.v1", "notes.copy_completed.v1", "jobs.lifecycle.v1"}
    assert schema_of(document, written["notes.archived.v1"]) == "NoteArchived"


def export_script() -> ModuleType:
    pytest.importorskip("yaml")  # a dev dependency of the workspace root
    spec = importlib.util.spec_from_file_location(
        "export_asyncapi", ROOT / "scripts" / "export_asyncapi.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_drift_check_fails_on_an_edited_or_missing_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = export_script()
    services = {"archiver": "archiver.handlers:router"}
    assert script.export(tmp_path, services) == 0
    assert script.check(tmp_path, services) == 0

    committed = tmp_path / "archiver.yaml"
    committed.write_text(
        committed.read_text().replace("groupName: archiver", "groupName: other", 1)
    )
    assert script.check(tmp_path, services) == 1
    assert "archiver.yaml: differs from the code" in capsys.readouterr().err

    committed.unlink()
    assert script.check(tmp_path, services) == 1
    assert "archiver.yaml: missing" in capsys.readouterr().err


def test_committed_document_is_the_generated_one() -> None:
    script = export_script()
    committed = ROOT / "docs" / "asyncapi" / "archiver.yaml"
    assert committed.read_text() == script.render(
        asyncapi_document(str(Service.ARCHIVER), router.routes)
    ), "run `make schemas` and commit docs/asyncapi/"
