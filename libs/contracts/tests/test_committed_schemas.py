"""The committed schemas in docs/events/ are the contract: the models must not break them."""

import json
from pathlib import Path

import pytest

from contracts import breaking_changes, json_schemas

SCHEMA_DIR = Path(__file__).parents[3] / "docs" / "events"
COMMITTED = sorted(SCHEMA_DIR.glob("*.json"))


def test_schema_directory_is_found() -> None:
    assert COMMITTED, f"no schemas in {SCHEMA_DIR}; run scripts/export_schemas.py"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_current_model_does_not_break_the_committed_schema(path: Path) -> None:
    current = json_schemas()
    assert path.stem in current, f"{path.stem} was removed; publish a .v2 beside it instead"
    assert breaking_changes(json.loads(path.read_text()), current[path.stem]) == []


def test_every_current_event_has_a_committed_schema() -> None:
    missing = sorted(json_schemas().keys() - {p.stem for p in COMMITTED})
    assert missing == [], "run scripts/export_schemas.py and commit docs/events/"
