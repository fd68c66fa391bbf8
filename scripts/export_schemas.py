"""Export every event's JSON Schema to docs/events/, or check the committed ones.

    python scripts/export_schemas.py           # write docs/events/<type>.json and the table
    python scripts/export_schemas.py --check   # exit 1 on a breaking change or a stale file

Committed schemas are the contract with running consumers: `--check` fails when a current model
breaks one (make the change additive, or add a `.v2` event beside the old). It also fails, with a
different message, when a committed file is merely stale (an additive change, a new event, the
catalogue table in docs/events.md): run `make schemas` and commit what it writes. `make lint` runs
it.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from contracts import CATALOGUE, breaking_changes, json_schemas

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "docs" / "events"
EVENTS_MD = ROOT / "docs" / "events.md"
TABLE_START, TABLE_END = "<!-- catalogue:start -->", "<!-- catalogue:end -->"


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def catalogue_table() -> str:
    rows = [
        "| event | type | stream | producers | consumers | purpose |",
        "|---|---|---|---|---|---|",
    ]
    for spec in CATALOGUE:
        stream_names = spec.streams
        if len(stream_names) == 3 and stream_names[0].endswith(".critical"):
            stream_names = (stream_names[0].removesuffix(".critical") + ".{critical,default,low}",)
        streams = "<br>".join(f"`{s}`" for s in stream_names)
        producers = ", ".join(spec.producers)
        consumers = ", ".join(spec.consumers) or "— (observability)"
        link = f"[`{spec.type_name}`](events/{spec.type_name}.json)"
        rows.append(
            f"| {spec.event.__name__} | {link} | {streams} | {producers} | {consumers} "
            f"| {spec.purpose} |"
        )
    return "\n".join(rows)


def with_table(markdown: str) -> str:
    head, found, rest = markdown.partition(TABLE_START)
    _, found_end, tail = rest.partition(TABLE_END)
    if not (found and found_end):
        raise SystemExit(f"{EVENTS_MD} lacks the {TABLE_START} ... {TABLE_END} markers")
    return f"{head}{TABLE_START}\n{catalogue_table()}\n{TABLE_END}{tail}"


def export() -> int:
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    current = json_schemas()
    for name, schema in current.items():
        (SCHEMA_DIR / f"{name}.json").write_text(render(schema))
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        if path.stem not in current:
            print(f"note: {path.name} has no current event; delete it once no consumer reads it")
    if EVENTS_MD.exists():
        EVENTS_MD.write_text(with_table(EVENTS_MD.read_text()))
    print(f"wrote {len(current)} schemas to {SCHEMA_DIR.relative_to(ROOT)}")
    return 0


def check() -> int:
    current = json_schemas()
    breaking: list[str] = []
    notes: list[str] = []
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        committed = json.loads(path.read_text())
        if path.stem not in current:
            breaking.append(f"{path.stem}: event removed (consumers may still read it)")
        elif reasons := breaking_changes(committed, current[path.stem]):
            breaking.extend(reasons)
        elif path.read_text() != render(current[path.stem]):
            notes.append(f"{path.stem}: committed schema is stale (additive change)")
    for name in sorted(current.keys() - {p.stem for p in SCHEMA_DIR.glob("*.json")}):
        notes.append(f"{name}: new event, schema not exported yet")
    if EVENTS_MD.exists() and with_table(EVENTS_MD.read_text()) != EVENTS_MD.read_text():
        notes.append(f"{EVENTS_MD.relative_to(ROOT)}: catalogue table is stale")
    for note in notes:
        print(f"stale: {note} (run `make schemas` and commit)", file=sys.stderr)
    for reason in breaking:
        print(f"BREAKING: {reason}", file=sys.stderr)
    if breaking:
        print(
            "Make the change additive, or publish a new .v2 event beside the old.", file=sys.stderr
        )
        return 1
    return 1 if notes else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    return check() if parser.parse_args().check else export()


if __name__ == "__main__":
    raise SystemExit(main())
