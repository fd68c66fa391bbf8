r"""`q` on the notes list: a literal, case-insensitive substring of the title or the body.

Served by `ILIKE` with `%`, `_` and `\\` escaped, from the two pg_trgm GIN indexes of migration
0005 (`ix_notes_title_trgm`, `ix_notes_body_trgm`). A trigram index can only look up a pattern
holding a trigram: pg_trgm takes them from runs of letters and digits, so a `q` without three of
them in a row would scan every note. Such a `q` is refused (422) instead: `MIN_QUERY_CHARS`.

The page is newest first, which no trigram index can give; PostgreSQL chooses between collecting
every match through the trigram indexes and sorting them (cheap when they are few) and walking
the owner's notes newest first until a page has matched (cheap when they are many), from its
estimate of how many match. For short terms that estimate is a fixed guess (0.8% of the notes for
four characters), so a four-letter word in 0.3% of 100k notes has it walk about 7,000 notes
(docs/api.md gives the measured figures). Collecting a bounded number of matches first, to
choose by the true count, was tried and measured: it cut that tail but cost every common term
the collection (a term in 30% of notes went from 2 to 48 ms), so the planner decides.
"""

import re

from sqlalchemy import ColumnElement, or_
from sqlmodel import col

from notes_api.errors import Problem
from notes_api.models import Note

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


def escape_like(text: str) -> str:
    r"""``text`` with LIKE's wildcards and escape character taken literally (escape ``\\``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def require_indexable(q: str) -> None:
    """Refuse (422) a ``q`` the trigram indexes cannot look up."""
    if not _INDEXABLE.search(q):
        raise Problem(422, TOO_SHORT)


def matching(q: str) -> ColumnElement[bool]:
    """Notes whose title or body contains ``q``, ignoring case (an index-served OR)."""
    pattern = f"%{escape_like(q)}%"
    return or_(
        col(Note.title).ilike(pattern, escape="\\"),
        col(Note.body).ilike(pattern, escape="\\"),
    )
