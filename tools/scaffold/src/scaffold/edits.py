"""Small, robust edits of the workspace's shared files: insert at a marker, else at an anchor.

Each registration point in a shared file carries a marker comment (``# scaffold: ... above this
line``). New lines go just above it, so two branches that each add a service meet as two added
lines, not as an edit of the same line. A file whose marker was lost (a merge kept the other
side) still works: the insertion point is then found from the file's syntax (the end of a class
body, the closing bracket of a tuple or dict), and the marker is put back.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ScaffoldError(Exception):
    """A generation step cannot go on; the message says what to change."""


def _find_owner(tree: ast.Module, owner: str) -> ast.stmt:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == owner:
            return node
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == owner for t in targets):
            return node
    raise ScaffoldError(f"found no class or assignment named {owner}")


def insert_lines(source: str, *, marker: str, owner: str, lines: list[str]) -> str:
    """Return ``source`` with ``lines`` above ``marker``, or at the end of ``owner``'s body.

    ``owner`` is a top-level class (the lines go after its last statement) or a top-level
    assignment of a bracketed literal (the lines go above its closing bracket); the marker is
    added below them in that case, indented like them.
    """
    text = source.splitlines(keepends=True)
    for index, line in enumerate(text):
        if line.strip() == marker:
            return "".join(text[:index] + [f"{new}\n" for new in lines] + text[index:])
    node = _find_owner(ast.parse(source), owner)
    indent = lines[0][: len(lines[0]) - len(lines[0].lstrip())] if lines else "    "
    added = [f"{new}\n" for new in lines] + [f"{indent}{marker}\n"]
    if isinstance(node, ast.ClassDef):
        end = node.body[-1].end_lineno or node.end_lineno or len(text)
        return "".join(text[:end] + added + text[end:])
    value = getattr(node, "value", None)
    if value is None or value.end_lineno is None:
        raise ScaffoldError(f"{owner} has no value to add to")
    closing = value.end_lineno - 1  # the line holding the closing bracket
    if text[closing].lstrip().startswith((")", "}", "]")):
        return "".join(text[:closing] + added + text[closing:])
    # A one-line literal, `X = (a, b)  # why`: the items go in before its bracket (ruff's format
    # wraps the line if it grows too long); there is no line for a marker.
    if value.end_col_offset is None:
        raise ScaffoldError(f"{owner} has no end; add the marker {marker!r}")
    line, column = text[closing], value.end_col_offset - 1
    items = ", ".join(new.strip().rstrip(",") for new in lines)
    text[closing] = f"{line[:column].rstrip().rstrip(',')}, {items}{line[column:]}"
    return "".join(text)


def insert_import(source: str, line: str) -> str:
    """Return ``source`` with ``line`` after its last top-level import (ruff sorts it after)."""
    if line in source.splitlines():
        return source
    tree = ast.parse(source)
    imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    text = source.splitlines(keepends=True)
    end = (imports[-1].end_lineno or 0) if imports else 0
    if not imports and tree.body and isinstance(tree.body[0], ast.Expr):  # after the docstring
        end = tree.body[0].end_lineno or 0
    return "".join([*text[:end], f"{line}\n", *text[end:]])


def add_to_toml_lists(source: str, *, beside: str, new: str) -> str:
    """Return ``source`` with ``"new"`` added to every string array that lists ``"beside"``.

    The root pyproject.toml names each service in several lists (import-linter's roots and
    contracts, mypy's packages, isort's first-party): wherever the model service is named, the new
    one belongs too. One-line arrays get the item at their end; multi-line arrays a line of its own.
    """
    quoted, item = f'"{beside}"', f'"{new}"'
    out: list[str] = []
    lines = source.splitlines(keepends=True)
    in_array = False
    for line in lines:
        stripped = line.strip()
        one_line = re.match(r"^(\s*[\w.-]+\s*=\s*\[)(.*)(\]\s*(#.*)?)$", line.rstrip("\n"))
        if one_line and quoted in one_line.group(2) and item not in one_line.group(2):
            head, items, tail = one_line.group(1), one_line.group(2).rstrip(), one_line.group(3)
            line = f"{head}{items.rstrip(', ')}, {item}{tail}\n"
        elif re.match(r"^\s*[\w.-]+\s*=\s*\[\s*$", line):
            in_array = True
        elif in_array and stripped.startswith("]"):
            in_array = False
        elif in_array and stripped.startswith(quoted) and item not in source:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(line)
            line = f"{indent}{item},\n"
        out.append(line)
    return "".join(out)


def add_mypy_path(source: str, *, beside: str, new: str) -> str:
    """Return ``source`` with ``new`` after ``beside`` in mypy's colon-separated ``mypy_path``."""
    if new in source:
        return source
    match = re.search(r'^(mypy_path\s*=\s*")([^"]*)(")', source, flags=re.MULTILINE)
    if match is None:
        raise ScaffoldError("pyproject.toml has no mypy_path under [tool.mypy]")
    parts = match.group(2).split(":")
    position = parts.index(beside) + 1 if beside in parts else len(parts)
    parts.insert(position, new)
    return source[: match.start(2)] + ":".join(parts) + source[match.end(2) :]


def add_table_row(markdown: str, *, heading: str, row: str) -> str:
    """Return ``markdown`` with ``row`` after the last row of the first table below ``heading``."""
    lines = markdown.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        raise ScaffoldError(f"no section {heading!r}")
    last = None
    for index in range(start + 1, len(lines)):
        if lines[index].startswith("|"):
            last = index
        elif last is not None:
            break
    if last is None:
        raise ScaffoldError(f"no table under {heading!r}")
    return "".join([*lines[: last + 1], f"{row}\n", *lines[last + 1 :]])


def update(path: Path, change: Callable[..., str], *args: Any, **kwargs: Any) -> bool:
    """Apply ``change(text, ...)`` to the file at ``path``; return whether it changed."""
    before = path.read_text()
    after = change(before, *args, **kwargs)
    if after != before:
        path.write_text(after)
    return after != before
