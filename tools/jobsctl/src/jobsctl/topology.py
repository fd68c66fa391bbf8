"""The streams and groups jobsctl may name: the (stream, group) pairs contracts declares.

An unknown name is refused with the known ones listed, before anything touches Redis.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from contracts import CONSUMER_GROUPS


class UnknownNameError(ValueError):
    """A stream or group that contracts does not declare."""


@dataclass(frozen=True)
class Pair:
    """One declared consumer group on one stream."""

    stream: str
    group: str


def declared_pairs() -> list[Pair]:
    """Every (stream, group) pair, sorted by stream then group."""
    return sorted(
        {Pair(g.stream, g.group) for g in CONSUMER_GROUPS}, key=lambda p: (p.stream, p.group)
    )


def streams() -> list[str]:
    """Every stream some group reads (those can have dead letters)."""
    return sorted({p.stream for p in declared_pairs()})


def groups() -> list[str]:
    """Every declared group name."""
    return sorted({p.group for p in declared_pairs()})


def _check(name: str, known: Iterable[str], what: str) -> str:
    known = list(known)
    if name not in known:
        raise UnknownNameError(f"unknown {what} {name!r}; known: {', '.join(known)}")
    return name


def select(stream: str | None = None, group: str | None = None) -> list[Pair]:
    """The declared pairs matching ``stream`` and ``group`` (either may be None: any)."""
    if stream is not None:
        _check(stream, streams(), "stream")
    if group is not None:
        _check(group, groups(), "group")
    chosen = [
        p
        for p in declared_pairs()
        if (stream is None or p.stream == stream) and (group is None or p.group == group)
    ]
    if not chosen:
        raise UnknownNameError(f"group {group!r} does not read stream {stream!r}")
    return chosen


def stream_or_all(stream: str | None) -> list[str]:
    """``[stream]`` once checked, or every stream that groups read."""
    return [_check(stream, streams(), "stream")] if stream is not None else streams()
