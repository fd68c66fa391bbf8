"""What jobsctl prints: Rich tables for people, JSON for scripts (``--json``)."""

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from servicekit.operations import DeadLetter, GroupStatus, StreamEntry


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def status_json(statuses: Sequence[GroupStatus]) -> str:
    """Every figure of each pair, consumers included."""
    return json.dumps([asdict(s) for s in statuses], indent=2)


def status_table(console: Console, statuses: Sequence[GroupStatus]) -> None:
    """One row a pair; consumers as a count and the longest idle time."""
    table = Table(title="streams and groups")
    table.add_column("stream", no_wrap=True)
    table.add_column("group", no_wrap=True)
    for column in ("length", "lag", "pending", "oldest pending", "consumers", "most idle",
                   "dead letters", "state"):  # fmt: skip
        table.add_column(column, justify="right")
    for s in statuses:
        most_idle = max((c.idle_seconds for c in s.consumers), default=None)
        state = "missing" if not s.exists else "PAUSED" if s.paused else "running"
        table.add_row(
            s.stream, s.group, str(s.length), "?" if s.lag is None else str(s.lag), str(s.pending),
            _age(s.oldest_pending_age_seconds), str(len(s.consumers)), _age(most_idle),
            str(s.dead_letters), state,
        )  # fmt: skip
    console.print(table)


def letter_summary(letter: DeadLetter) -> dict[str, Any]:
    """What a listing shows of a dead letter (its record, not the message)."""
    meta = letter.meta
    return {
        "id": letter.id,
        "stream": letter.stream,
        "group": meta.get("group"),
        "error_class": meta.get("error_class"),
        "error_message": meta.get("error_message"),
        "attempts": meta.get("attempts"),
        "first_failed_at": meta.get("first_failed_at"),
        "dead_lettered_at": _when(letter.dead_lettered_at),
        "trace_id": meta.get("trace_id"),
    }


def letters_json(letters: Sequence[DeadLetter]) -> str:
    """The listing as a JSON array."""
    return json.dumps([letter_summary(x) for x in letters], indent=2)


def letters_table(console: Console, letters: Sequence[DeadLetter]) -> None:
    """The listing as a table."""
    table = Table(title=f"{len(letters)} dead letter(s)")
    for column in ("id", "stream", "group", "error", "attempts", "dead-lettered", "trace id"):
        table.add_column(column)
    for letter in letters:
        row = letter_summary(letter)
        error = f"{row['error_class']}: {row['error_message']}"
        table.add_row(
            row["id"], row["stream"], row["group"] or "-", error, row["attempts"] or "-",
            row["dead_lettered_at"], row["trace_id"] or "-",
        )  # fmt: skip
    console.print(table)


def letter_detail(letter: DeadLetter) -> str:
    """One dead letter whole: its record, every attempt's error, the original message."""
    try:
        body: Any = json.loads(letter.body)
    except ValueError:
        body = letter.body.decode("utf-8", "replace")
    detail = {**letter_summary(letter), "meta": letter.meta, "errors": letter.errors,
              "headers": letter.headers, "body": body}  # fmt: skip
    return json.dumps(detail, indent=2, default=str)


def entries_json(entries: Sequence[StreamEntry]) -> str:
    """A stream's entries as a JSON array: id, time, type, trace id, headers, body."""
    return json.dumps(
        [{"id": e.id, "added_at": _when(e.added_at), "event_type": e.event_type,
          "trace_id": e.trace_id, "fields": e.fields, "problem": e.problem, "headers": e.headers,
          "body": e.body} for e in entries],
        indent=2, default=str,
    )  # fmt: skip
