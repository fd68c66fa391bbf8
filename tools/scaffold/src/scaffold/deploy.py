"""Register a new service in the deploy files, when they exist: compose and Prometheus targets.

Both follow whatever the deploy files already do for the model service (the archiver), so they
need no template of their own and stay right when the deploy conventions change:

- compose (``docker-compose.yml``, ``deploy/docker-compose*.yml``, ``deploy/compose*.yml``): every
  service whose name starts with ``archiver`` (``archiver``, ``archiver-migrate``, ...) is copied,
  below the last of them, with ``archiver`` renamed and its ops port changed.
- Prometheus (``deploy/**/targets*.json``, ``deploy/**/targets*.y*ml``): a file_sd list,
  ``[{"targets": ["archiver:9102"], "labels": {...}}]``; the archiver's entry is copied the same
  way (a YAML file gets the entry appended as text, so its comments stay).

A missing file, or one without the archiver, is skipped with a note saying what to add by hand.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

MODEL, MODEL_PORT = "archiver", 9102


def _renamed(text: str, name: str, port: int) -> str:
    text = re.sub(rf"\b{MODEL}\b", name, text)
    return re.sub(rf"\b{MODEL_PORT}\b", str(port), text)


def _compose_files(root: Path) -> list[Path]:
    found = [root / "docker-compose.yml", root / "compose.yml"]
    found += sorted((root / "deploy").glob("docker-compose*.y*ml"))
    found += sorted((root / "deploy").glob("compose*.y*ml"))
    return [p for p in found if p.is_file()]


def _target_files(root: Path) -> list[Path]:
    deploy = root / "deploy"
    return sorted(
        p
        for pattern in ("**/targets*.json", "**/targets*.yml", "**/targets*.yaml")
        for p in deploy.glob(pattern)
        if p.is_file()
    )


def add_compose_service(text: str, *, name: str, port: int) -> str:
    """Return compose ``text`` with copies of the archiver's service blocks for ``name``."""
    document = yaml.safe_load(text) or {}
    services = document.get("services") or {}
    if name in services or not any(s.startswith(MODEL) for s in services):
        return text
    lines = text.splitlines(keepends=True)
    blocks: list[tuple[int, int]] = []
    index = 0
    while index < len(lines):
        match = re.match(r"^(\s+)([\w.-]+):\s*$", lines[index])
        if match and match.group(2).startswith(MODEL) and match.group(2) in services:
            indent = len(match.group(1))
            end = index + 1
            while end < len(lines) and (
                not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
            ):
                end += 1
            while end > index + 1 and not lines[end - 1].strip():
                end -= 1
            blocks.append((index, end))
            index = end
        else:
            index += 1
    if not blocks:
        return text
    copied = [_renamed("".join(lines[start:end]), name, port) for start, end in blocks]
    last = blocks[-1][1]
    return "".join(lines[:last]) + "".join(copied) + "".join(lines[last:])


def _target_entry(entries: list[dict[str, Any]], name: str, port: int) -> dict[str, Any] | None:
    for entry in entries:
        if any(str(t).split(":")[0].endswith(MODEL) for t in entry.get("targets", [])):
            model = json.loads(_renamed(json.dumps(entry), name, port))
            return copy.deepcopy(model)  # type: ignore[no-any-return]
    return None


def add_target(text: str, *, name: str, port: int, as_json: bool) -> str:
    """Return a Prometheus file_sd list with an entry for ``name`` copied from the archiver's."""
    entries = (json.loads(text) if as_json else yaml.safe_load(text)) or []
    if not isinstance(entries, list):
        return text
    if any(f"{name}:" in str(t) for e in entries for t in e.get("targets", [])):
        return text
    entry = _target_entry(entries, name, port)
    if entry is None:
        return text
    if as_json:
        return json.dumps([*entries, entry], indent=2) + "\n"
    block = str(yaml.safe_dump([entry], sort_keys=False, default_flow_style=None))
    return text.rstrip("\n") + "\n" + block


def register(root: Path, *, name: str, port: int) -> Iterator[tuple[Path | None, str]]:
    """Add ``name`` to the deploy files there are; yield (changed file or None, note)."""
    compose = _compose_files(root)
    added_service = False
    for path in compose:
        before = path.read_text()
        after = add_compose_service(before, name=name, port=port)
        if after != before:
            path.write_text(after)
            added_service = True
            yield path, f"{path.relative_to(root)}: added {name}, copied from the archiver's"
    if not added_service:
        yield (
            None,
            (
                f"compose: no compose file lists the archiver; add {name} by hand (run "
                f"`{name} migrate`, then `{name}` with OPS_PORT={port})"
            ),
        )
    targets = _target_files(root)
    added_target = False
    for path in targets:
        before = path.read_text()
        after = add_target(before, name=name, port=port, as_json=path.suffix == ".json")
        if after != before:
            path.write_text(after)
            added_target = True
            yield path, f"{path.relative_to(root)}: added the scrape target {name}:{port}"
    if not added_target:
        yield (
            None,
            (
                f"prometheus: no deploy/**/targets*.(json|yml) lists the archiver; add a scrape "
                f"target for {name} on its ops port {port} (/metrics) by hand"
            ),
        )
