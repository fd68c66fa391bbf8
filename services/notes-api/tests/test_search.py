"""`q` on the notes list: a literal, case-insensitive substring served from trigram indexes."""

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from notes_api.models import Note
from notes_api.search import MIN_QUERY_CHARS, matching

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


async def test_the_q_statement_is_served_from_the_trigram_indexes(
    engine_direct: AsyncEngine,
) -> None:
    # Enough rows (and statistics) that the planner picks its plan as it would in production.
    async with engine_direct.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO notes.notes (id, owner_id, title, body, tags, version, created_at,"
                " updated_at) SELECT gen_random_uuid(), 'owner-' || (i % 2), 'title ' || i,"
                " repeat(md5(i::text), 8), '{}', 1, now() - i * interval '1 second', now()"
                " FROM generate_series(1, 20000) AS i"
            )
        )
        await connection.execute(text("ANALYZE notes.notes"))
    statement = (
        select(Note)
        .where(Note.owner_id == "owner-1", matching("xyzzyplugh"))
        .order_by(Note.created_at.desc(), Note.id.desc())  # type: ignore[attr-defined]
        .limit(21)
    )
    async with engine_direct.connect() as connection:
        await connection.execute(text("SET enable_seqscan = off"))
        sql = statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
        plan = "\n".join(row[0] for row in await connection.execute(text(f"EXPLAIN {sql}")))
    assert "ix_notes_title_trgm" in plan, plan
    assert "ix_notes_body_trgm" in plan, plan
    assert "Seq Scan" not in plan, plan
