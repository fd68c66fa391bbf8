"""`q` on the notes list: a literal, case-insensitive substring served from trigram indexes."""

from typing import Any

import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from notes_api.models import Note
from notes_api.search import MIN_QUERY_CHARS, newest_matches
from notes_api.settings import NotesApiSettings
from servicekit import create_database_engine

from .conftest import create_note


@pytest.mark.parametrize("q", ["a", "ab", "%%%", "a b c", "-_-", "%a%"])
async def test_q_without_three_letters_or_digits_in_a_row_is_422_and_says_why(
    client: httpx.AsyncClient, alice: dict[str, str], q: str
) -> None:
    response = await client.get("/v1/notes", params={"q": q}, headers=alice)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert str(MIN_QUERY_CHARS) in response.json()["detail"]


async def test_q_matches_title_or_body_case_insensitively_as_a_substring(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    in_title = await create_note(client, alice, title="Quarterly PLANNING", body="")
    in_body = await create_note(client, alice, title="other", body="we are replanning it")
    await create_note(client, alice, title="unrelated", body="plan nothing")
    await create_note(client, bob, title="planning too", body="")
    found = (await client.get("/v1/notes", params={"q": "PlAnNiNg"}, headers=alice)).json()
    assert [n["id"] for n in found["items"]] == [in_body["id"], in_title["id"]]


_TRICKY = [
    "price (USD) is $500.00 + tax",
    "abc.def or abcxdef",
    "100% sure_thing",
    r"C:\path\to\file",
    "***=literal director",
    "[abc] {222,333} ^start end$ a|b q?",
    "ÉTÉ à Paris",
    "été à paris",
    "Straße STRASSE",
    "line one\nline two",
    "tab\there",
    "ABC abc",
]
_TRICKY_QS = [
    "(USD)",
    "$500.00",
    "abc.def",
    "abcxdef",
    "100%",
    "sure_thing",
    r"\path\to",
    "***=lit",
    "[abc]",
    "{222,333}",
    "^start",
    "end$",
    "end$ a|b q?",
    "été",
    "ÉTÉ",
    "straße",
    "STRASSE",
    "one\nline",
    "tab\the",
    "abc",
    "500.0",
    "+ tax",
]


async def test_q_is_literal_and_case_insensitive_as_ilike_was_whatever_its_punctuation(
    client: httpx.AsyncClient, alice: dict[str, str], engine_direct: AsyncEngine
) -> None:
    """Each `q` finds exactly the notes an escaped `ILIKE` finds (the match `q` promised)."""
    for text_ in _TRICKY:
        await create_note(client, alice, title=text_[:10], body=text_)
    for q in _TRICKY_QS:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        async with engine_direct.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT id FROM notes.notes WHERE owner_id = 'alice' AND (title ILIKE :p "
                    "OR body ILIKE :p) ORDER BY created_at DESC, id DESC"
                ),
                {"p": like},
            )
            expected = [str(row.id) for row in rows]
        found = await _every_page(client, alice, {"q": q})
        assert found == expected, q
        assert expected, q  # each q finds something: the comparison says something


# 3,000 notes of alice, note i created i seconds ago (i = 1 is the newest): more than one
# window, so terms meet both phases. Each term's notes, by i:
#   common  every 3rd             (the window holds a page: phase 1 only)
#   rare    every 97th, and 999-1001 (straddles the window's edge: phase 1 then phase 2)
#   ancient every 5th past 2,000  (none in the window: phase 2 alone, many candidates)
#   absent  none
# Tags and archiving cut across them: tag "even" on even i, archived when i % 7 == 0. Bob has
# notes with every term, which alice must never see.
_DATASET = """
INSERT INTO notes.notes (id, owner_id, title, body, tags, version, created_at, updated_at,
                         archived_at)
SELECT gen_random_uuid(), owner, 'note ' || i || CASE WHEN i > 2000 AND i % 5 = 0
           THEN ' AncientTerm' ELSE '' END,
       repeat('filler text ', 20)
           || CASE WHEN i % 3 = 0 THEN ' the COMMONword ' ELSE '' END
           || CASE WHEN i % 97 = 0 OR i BETWEEN 999 AND 1001 THEN ' a rareword! ' ELSE '' END,
       CASE WHEN i % 2 = 0 THEN ARRAY['even'] ELSE '{}' END, 1,
       now() - i * interval '1 second', now(),
       CASE WHEN i % 7 = 0 THEN now() END
FROM generate_series(1, 3000) AS i, unnest(ARRAY['alice', 'bob']) AS owner
"""
_FILTERS: list[dict[str, str]] = [
    {}, {"tag": "even"}, {"archived": "true"}, {"archived": "false"},
    {"tag": "even", "archived": "false"},
]  # fmt: skip


async def _reference(engine: AsyncEngine, q: str, filters: dict[str, str]) -> list[str]:
    """The ids a plain ILIKE over every note of alice finds, newest first."""
    where = ["owner_id = 'alice'", "(title ILIKE :p OR body ILIKE :p)"]
    if "tag" in filters:
        where.append("tags @> ARRAY[:tag]")
    if "archived" in filters:
        where.append(f"archived_at IS {'NOT ' if filters['archived'] == 'true' else ''}NULL")
    order = "ORDER BY created_at DESC, id DESC"
    sql = f"SELECT id FROM notes.notes WHERE {' AND '.join(where)} {order}"
    async with engine.connect() as connection:
        rows = await connection.execute(text(sql), {"p": f"%{q}%", "tag": filters.get("tag")})
    return [str(row.id) for row in rows]


async def _every_page(
    client: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str]
) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page_params = params if cursor is None else {**params, "cursor": cursor}
        response = await client.get("/v1/notes", params=page_params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        ids += [note["id"] for note in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            return ids


@pytest.fixture
async def searchable(engine_direct: AsyncEngine) -> AsyncEngine:
    async with engine_direct.begin() as connection:
        await connection.execute(text(_DATASET))
        await connection.execute(text("ANALYZE notes.notes"))
    return engine_direct


@pytest.mark.parametrize(
    ("q", "limit"),
    [("commonWORD", "100"), ("rareword", "7"), ("RAREWORD!", "20"), ("ancientterm", "50"),
     ("absent", "20")],
)  # fmt: skip
async def test_every_page_of_q_equals_a_plain_ilike_whatever_the_phase_and_filters(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    searchable: AsyncEngine,
    q: str,
    limit: str,
) -> None:
    for filters in _FILTERS:
        expected = await _reference(searchable, q, filters)
        found = await _every_page(client, alice, {"q": q, "limit": limit, **filters})
        assert found == expected, filters


async def test_q_older_than_the_window_is_read_through_the_trigram_indexes(
    searchable: AsyncEngine, settings: NotesApiSettings
) -> None:
    executed: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        executed.append((statement, parameters))

    engine = create_database_engine(settings).execution_options(isolation_level="AUTOCOMMIT")
    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with engine.connect() as connection:
            statement = select(Note).where(Note.owner_id == "alice")
            rows = await newest_matches("ancientterm")(connection, statement, 21)
            assert connection.sync_connection is not None
            level = connection.sync_connection.get_execution_options()["isolation_level"]
    finally:
        await engine.dispose()
    assert len(rows) == 21
    assert all("AncientTerm" in row.title for row in rows)
    assert level == "AUTOCOMMIT"  # the reader's level is restored after phase 2
    settings_at = next(i for i, (sql, _) in enumerate(executed) if "set_config" in sql)
    phase_2, parameters = executed[settings_at + 1]
    async with searchable.begin() as connection:
        await connection.exec_driver_sql(executed[settings_at][0])
        plan = await connection.exec_driver_sql(f"EXPLAIN {phase_2}", parameters)
        lines = "\n".join(row[0] for row in plan)
    assert "ix_notes_title_trgm" in lines, lines
    assert "ix_notes_body_trgm" in lines, lines
    assert "Tid Scan on notes" in lines, lines  # the owner's notes are not walked or rechecked
    assert "Seq Scan" not in lines, lines
    assert "ix_notes_owner_created" not in lines, lines
