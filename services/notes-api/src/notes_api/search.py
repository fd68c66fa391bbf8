r"""`q` on the notes list: a literal, case-insensitive substring of the title or the body.

Served by a case-insensitive regular expression (`~*`) with every ASCII punctuation character
escaped (`escape_regex`), from the two pg_trgm GIN indexes `ix_notes_title_trgm` and
`ix_notes_body_trgm` (`notes_api.search_indexes`). Not `ILIKE`: each candidate the index returns is
rechecked, and `ILIKE` in a UTF-8 database lowers the whole title and body first, where `~*` folds
case as it compares; the same notes match (tests/test_search.py), for 1.3-2.1x less database time
where the rechecks dominate (docs/api.md). A trigram index can only look up a pattern
holding a trigram: pg_trgm takes them from runs of letters and digits, so a `q` without three of
them in a row would scan every note. Such a `q` is refused (422) instead: `MIN_QUERY_CHARS`.

The page is newest first, which no trigram index can give. Left to choose, PostgreSQL either
collected every match through the indexes and sorted them or walked the owner's notes newest
first until a page matched, from an estimate that is a guess (bodies over 1 KB get no column
statistics): 0.3-2 s when it guessed wrong. `newest_matches` makes every plan bounded instead:

1. recheck the newest `WINDOW` notes of the listing (after the cursor, with its filters) and keep
   the matches, and that window's last note; if they fill the page, that is the page (a common
   term: a few ms);
2. otherwise the term is rare in that window: the rest of the page is read from the trigram
   indexes' matches older than the window's last note, newest first. The matches are collected
   by themselves (`ARRAY(SELECT ctid ... WHERE q)`, every owner's: the only condition there is
   the term's), index walks and sequential scans turned off for that statement, and the
   listing's conditions filter them by TID: only the term's own candidates are rechecked.

A term spread over the notes and too rare for phase 1 (under 21 of 1,000 for a page of 20) has
under ~2% of the notes to recheck in phase 2; the window, 1,000, about balances the two phases'
costs for a page of 20 over 100k notes (sqrt(21 x 100k) is ~1,450; 1,000 favours the common
terms). A page of 100 sends terms under 10% of the window to phase 2, which costs as many
rechecks. The cost left unbounded is a term common in old notes but rare in the newest window
(or after the cursor), or common in other owners' notes: phase 2 rechecks all of its matches
older than the window, of every owner, about 10-15 us each (docs/api.md gives the figures
measured by `python -m bench.search`).
"""

import re
import string
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Row,
    Select,
    func,
    literal_column,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col

from notes_api.errors import Problem
from notes_api.models import Note
from notes_api.pagination import Fetch

MIN_QUERY_CHARS = 3
"""Letters or digits in a row that `q` must hold: a trigram, what the index can look up."""
_INDEXABLE = re.compile(rf"[^\W_]{{{MIN_QUERY_CHARS}}}")
SEARCH_RULE = (
    "A literal, case-insensitive substring of the title or the body; it must hold at least "
    f"{MIN_QUERY_CHARS} letters or digits in a row."
)
TOO_SHORT = (
    f"q must hold at least {MIN_QUERY_CHARS} letters or digits in a row "
    "(shorter text cannot be searched with the index)."
)


def escape_regex(text: str) -> str:
    r"""``text`` as a regular expression matching it literally: ASCII punctuation escaped.

    In PostgreSQL's regular expressions (AREs) a backslash before a character that is not a
    letter or digit stands for that character; every metacharacter (``.^$|?*+()[]{}\``) is
    ASCII punctuation, and so is ``*`` of the ``***=`` and ``***:`` directors.
    """
    return "".join(f"\\{c}" if c in string.punctuation else c for c in text)


def require_indexable(q: str) -> None:
    """Refuse (422) a ``q`` the trigram indexes cannot look up."""
    if not _INDEXABLE.search(q):
        raise Problem(422, TOO_SHORT)


def matching(q: str, notes: FromClause | None = None) -> ColumnElement[bool]:
    """Notes whose title or body contains ``q``, ignoring case (an index-served OR).

    Of table `notes`, or of ``notes``: a subquery or alias with its `title` and `body`.
    """
    pattern = escape_regex(q)
    title, body = (
        (col(Note.title), col(Note.body)) if notes is None else (notes.c.title, notes.c.body)
    )
    return or_(title.op("~*")(pattern), body.op("~*")(pattern))


WINDOW = 1000
"""Newest notes that phase 1 reads and rechecks before the trigram indexes are asked."""
_ONLY_BITMAPS = text(
    "SELECT set_config('enable_indexscan', 'off', true), set_config('enable_seqscan', 'off', true)"
)


def _among_trigram_matches(q: str) -> ColumnElement[bool]:
    """Notes among those matching ``q`` of any owner, found by row address (a TID scan).

    The matches are collected apart (`ARRAY(SELECT ctid ...)`), where no condition but ``q``
    leaves the planner anything to use besides the trigram indexes; the listing's conditions
    then filter that set. Given the owner's conditions together with ``q``, PostgreSQL may
    instead take the owner's index and recheck every note it holds.
    """
    candidates = Note.__table__.alias("candidates")  # type: ignore[attr-defined]
    found: Select[Any] = select(literal_column("candidates.ctid")).where(matching(q, candidates))
    return literal_column("notes.notes.ctid") == func.any(func.array(found.scalar_subquery()))


async def _through_trigram_indexes(
    connection: AsyncConnection, statement: Select[Any]
) -> Sequence[Row[Any]]:
    """``statement``'s rows, planned without index walks or sequential scans.

    `SET LOCAL` needs a transaction, and the reader is in autocommit: one is opened for this
    statement alone, and the connection's own isolation level is restored after.
    """
    assert connection.sync_connection is not None  # an AsyncConnection in use has one
    level = connection.sync_connection.get_execution_options().get("isolation_level")
    await connection.commit()  # ends SQLAlchemy's implicit begin; nothing to commit in autocommit
    await connection.execution_options(isolation_level="READ COMMITTED")
    try:
        async with connection.begin():
            await connection.execute(_ONLY_BITMAPS)
            rows: Sequence[Row[Any]] = (await connection.execute(statement)).all()
            return rows
    finally:
        if level is not None:
            await connection.execution_options(isolation_level=level)


def newest_matches(q: str) -> Fetch:
    """Reads a page of notes matching ``q``, newest first, in two bounded phases.

    Phase 1 rechecks the newest `WINDOW` notes of ``notes`` (the listing, after the cursor); if
    they hold the page, that is it. Otherwise phase 2 asks the trigram indexes for the matches
    older than the window's last note, with index walks and sequential scans turned off for that
    one statement (in its own transaction), so it rechecks only the term's own candidates.
    """

    async def fetch(
        connection: AsyncConnection, notes: Select[Any], count: int
    ) -> Sequence[Row[Any]]:
        newest = (col(Note.created_at).desc(), col(Note.id).desc())
        position = func.row_number().over(order_by=newest).label("position")
        recent = notes.add_columns(position).order_by(*newest).limit(WINDOW).subquery("recent")
        found: ColumnElement[bool] = matching(q, recent)
        # Besides the matches, the window's last note (its key bounds phase 2); when the window
        # holds fewer than `count` matches, all of them and it fit under the limit.
        phase_1 = (
            select(recent, found.label("hit"))
            .where(or_(found, recent.c.position == WINDOW))
            .order_by(recent.c.created_at.desc(), recent.c.id.desc())
            .limit(count)
        )
        rows = (await connection.execute(phase_1)).all()
        hits = [row for row in rows if row.hit]
        if len(hits) >= count or not rows or rows[-1].position < WINDOW:
            return hits[:count]
        edge = rows[-1]
        older = tuple_(col(Note.created_at), col(Note.id)) < tuple_(edge.created_at, edge.id)
        phase_2 = notes.where(older, _among_trigram_matches(q)).order_by(*newest)
        phase_2 = phase_2.limit(count - len(hits))
        return [*hits, *await _through_trigram_indexes(connection, phase_2)]

    return fetch
