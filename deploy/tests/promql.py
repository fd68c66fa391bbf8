"""Just enough PromQL reading for the tests: the vector selectors inside an expression."""

from __future__ import annotations

import re

_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\b\s*(\([^)]*\))?")
_RANGE = re.compile(r"\[[^\]]*\]")
_SELECTOR = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?P<labels>\{[^}]*\})?")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"})


def selectors(expr: str) -> list[str]:
    """Every vector selector (``metric{matchers}``) in ``expr``, ranges and groupings removed."""
    text = _RANGE.sub("", _GROUPING.sub("", expr))
    found = []
    for match in _SELECTOR.finditer(text):
        name = match.group("name")
        rest = text[match.end() :].lstrip()
        if name in _KEYWORDS or (rest.startswith("(") and not match.group("labels")):
            continue  # an operator, or a function / aggregation call
        start = match.start()
        if start > 0 and (text[start - 1].isdigit() or text[start - 1] in ".\"'"):
            continue  # part of a number (1e3) or a string
        found.append(name + (match.group("labels") or ""))
    return found
