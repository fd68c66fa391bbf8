"""docs/api.md states every connection limit with its env var and its default."""

from pathlib import Path

from notes_api.settings import NotesApiSettings

API_MD = Path(__file__).parents[3] / "docs" / "api.md"


def test_every_connection_limit_is_documented_with_its_default() -> None:
    section = API_MD.read_text().split("## Connection and request limits", 1)[1].split("\n## ")[0]
    for name, field in NotesApiSettings.model_fields.items():
        if not name.startswith("http_"):
            continue
        default = field.default
        shown = f"`{name.upper()}`" + ("" if default is None else f" ({default:g})")
        assert shown in section, f"{shown} missing from docs/api.md"
