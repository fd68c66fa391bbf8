"""fanout's AsyncAPI document: what it reads (streams, groups, event schemas) and writes."""

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from contracts import Service, groups_for
from fanout.handlers import routes
from servicekit.asyncapi import asyncapi_document

ROOT = Path(__file__).parents[3]


def channels(document: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return [c for c in document["channels"].values() if c["bindings"]["redis"]["method"] == method]


def test_document_lists_every_stream_and_group_fanout_reads_and_what_it_writes() -> None:
    document = asyncapi_document(str(Service.FANOUT), routes)

    read = {
        (c["address"], c["bindings"]["redis"]["groupName"])
        for c in channels(document, "xreadgroup")
    }
    assert read == {(g.stream, g.group) for g in groups_for(Service.FANOUT)}
    written = {c["address"] for c in channels(document, "xadd")}
    assert {"jobs.archive.low", "jobs.lifecycle.v1"} <= written


def test_committed_document_is_the_generated_one() -> None:
    pytest.importorskip("yaml")  # a dev dependency of the workspace root
    spec = importlib.util.spec_from_file_location(
        "export_asyncapi", ROOT / "scripts" / "export_asyncapi.py"
    )
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    committed = ROOT / "docs" / "asyncapi" / "fanout.yaml"
    assert committed.read_text() == script.render(asyncapi_document(str(Service.FANOUT), routes)), (
        "run `make schemas` and commit docs/asyncapi/"
    )
