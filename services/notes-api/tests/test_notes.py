import json
from uuid import uuid4

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import NOTES_CREATED, NOTES_DELETED, NOTES_UPDATED, NoteCreated, NoteDeleted
from notes_api.app import create_app
from notes_api.auth import create_key
from notes_api.settings import NotesApiSettings

from .conftest import count, create_note, outbox


async def test_create_returns_201_with_location_etag_and_writes_created_event(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    body = {"title": "Groceries", "body": "milk", "tags": ["home", "todo"]}
    response = await client.post("/v1/notes", json=body, headers=alice)
    assert response.status_code == 201
    note = response.json()
    assert response.headers["location"] == f"/v1/notes/{note['id']}"
    assert response.headers["etag"] == '"1"'
    assert note["version"] == 1
    assert note["tags"] == ["home", "todo"]
    [row] = await outbox(engine, NOTES_CREATED)
    event = NoteCreated.model_validate(row["payload"])
    assert str(event.note_id) == note["id"] == row["aggregate_id"]
    assert event.owner_id == "alice"
    assert event.note.title == "Groceries"
    assert event.version == 1


async def test_get_returns_the_note_with_its_etag(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    note = await create_note(client, alice)
    response = await client.get(f"/v1/notes/{note['id']}", headers=alice)
    assert response.status_code == 200
    assert response.json() == note
    assert response.headers["etag"] == '"1"'


async def test_update_with_current_etag_bumps_version_and_writes_updated_event(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice)
    response = await client.patch(
        f"/v1/notes/{note['id']}", json={"title": "renamed"}, headers={**alice, "If-Match": '"1"'}
    )
    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert response.json()["title"] == "renamed"
    assert response.headers["etag"] == '"2"'
    [row] = await outbox(engine, NOTES_UPDATED)
    assert row["payload"]["version"] == 2
    assert row["payload"]["note"]["title"] == "renamed"


async def test_update_with_stale_etag_is_412_and_changes_nothing(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice)
    url = f"/v1/notes/{note['id']}"
    assert (await client.patch(url, json={"body": "v2"}, headers=alice)).status_code == 200
    stale = await client.patch(url, json={"body": "v3"}, headers={**alice, "If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert (await client.get(url, headers=alice)).json()["body"] == "v2"
    assert len(await outbox(engine, NOTES_UPDATED)) == 1


async def test_delete_returns_204_and_writes_deleted_event_with_last_state(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice, title="doomed")
    response = await client.delete(f"/v1/notes/{note['id']}", headers=alice)
    assert response.status_code == 204
    assert (await client.get(f"/v1/notes/{note['id']}", headers=alice)).status_code == 404
    [row] = await outbox(engine, NOTES_DELETED)
    event = NoteDeleted.model_validate(row["payload"])
    assert event.note.title == "doomed"
    assert event.version == 2


async def test_another_owners_note_answers_404_like_a_missing_one_on_every_verb(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str], engine: AsyncEngine
) -> None:
    note = await create_note(client, alice)
    for note_id in (note["id"], str(uuid4())):
        url = f"/v1/notes/{note_id}"
        answers = [
            await client.get(url, headers=bob),
            await client.patch(url, json={"title": "x"}, headers=bob),
            await client.delete(url, headers=bob),
            await client.post(f"{url}/archive", headers=bob),
            await client.post(f"{url}/copy", json={}, headers=bob),
        ]
        assert [a.status_code for a in answers] == [404] * 5
        assert len({a.json()["detail"] for a in answers}) == 1
    assert (await client.get("/v1/notes", headers=bob)).json()["items"] == []
    assert len(await outbox(engine)) == 1  # only alice's creation


async def test_list_pages_through_every_note_with_an_opaque_cursor(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    created = [(await create_note(client, alice, title=f"n{i}"))["id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/notes", params=params, headers=alice)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))


async def test_a_tampered_cursor_is_rejected_with_400(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for _ in range(3):
        await create_note(client, alice)
    cursor = (await client.get("/v1/notes?limit=1", headers=alice)).json()["next_cursor"]
    tampered = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
    for bad in (tampered, "not-a-cursor", "e30"):
        response = await client.get("/v1/notes", params={"cursor": bad}, headers=alice)
        assert response.status_code == 400, bad
        assert response.headers["content-type"] == "application/problem+json"


async def test_list_filters_by_tag_and_archived(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine
) -> None:
    work = await create_note(client, alice, tags=["work"])
    await create_note(client, alice, tags=["home"])
    async with engine.begin() as connection:
        from sqlalchemy import text

        await connection.execute(
            text("UPDATE notes.notes SET archived_at = now() WHERE id = :id"), {"id": work["id"]}
        )
    tagged = (await client.get("/v1/notes?tag=work", headers=alice)).json()["items"]
    assert [n["id"] for n in tagged] == [work["id"]]
    archived = (await client.get("/v1/notes?archived=true", headers=alice)).json()["items"]
    assert [n["id"] for n in archived] == [work["id"]]
    active = (await client.get("/v1/notes?archived=false", headers=alice)).json()["items"]
    assert [n["tags"] for n in active] == [["home"]]


@pytest.mark.parametrize("needle", ["100%", "100%_off", "_off\\ now", "100%_off\\"])
async def test_q_treats_like_wildcards_literally(
    client: httpx.AsyncClient, alice: dict[str, str], needle: str
) -> None:
    hit = await create_note(client, alice, title="sale", body="get 100%_off\\ now")
    # What each needle would match if `%`, `_` or `\` were wildcards or an escape.
    await create_note(client, alice, title="plain", body="10000 off and xoff now, 1000x_off\\")
    found = (await client.get("/v1/notes", params={"q": needle}, headers=alice)).json()["items"]
    assert [n["id"] for n in found] == [hit["id"]]


async def test_injection_like_strings_are_stored_and_returned_verbatim(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    nasty = "'; DROP TABLE notes.notes; -- <script>alert(1)</script> {{7*7}} ${x} ü 😀"
    note = await create_note(client, alice, title=nasty[:200], body=nasty, tags=["'--", "<b>"])
    fetched = (await client.get(f"/v1/notes/{note['id']}", headers=alice)).json()
    assert fetched["body"] == nasty
    assert fetched["tags"] == ["'--", "<b>"]
    found = (await client.get("/v1/notes", params={"q": "DROP TABLE"}, headers=alice)).json()
    assert [n["id"] for n in found["items"]] == [note["id"]]


@pytest.mark.parametrize(
    "body",
    [
        {"title": "t" * 201},
        {"title": ""},
        {"title": "t", "tags": [f"t{i}" for i in range(21)]},
        {"title": "t", "tags": ["x" * 33]},
        {"title": "t", "body": "nul \u0000 inside"},
        {"title": "nul\u0000"},
        {"title": "t", "tags": ["a\u0000"]},
        {"title": "t", "unknown": 1},
        {"body": "no title"},
    ],
    ids=["long-title", "empty-title", "21-tags", "long-tag", "nul-body", "nul-title", "nul-tag",
         "unknown-field", "missing-title"],
)  # fmt: skip
async def test_invalid_note_is_422_problem(
    client: httpx.AsyncClient, alice: dict[str, str], engine: AsyncEngine, body: dict[str, object]
) -> None:
    response = await client.post("/v1/notes", json=body, headers=alice)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await count(engine, "notes") == 0


@pytest.mark.parametrize("raw", [b'{"title": "\\ud800"}', b'{"title": "t", "body": "x\\udfffy"}'])
async def test_lone_surrogates_are_422_never_500(
    client: httpx.AsyncClient, alice: dict[str, str], raw: bytes
) -> None:
    headers = {**alice, "Content-Type": "application/json"}
    response = await client.post("/v1/notes", content=raw, headers=headers)
    assert response.status_code == 422, response.text
    query = await client.get("/v1/notes", params={"q": "\x00"}, headers=alice)
    assert query.status_code == 422


async def test_body_over_64_kib_is_413(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    big = json.dumps({"title": "t", "body": "x" * (64 * 1024)}).encode()
    headers = {**alice, "Content-Type": "application/json"}
    response = await client.post("/v1/notes", content=big, headers=headers)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"

    async def chunks():  # no Content-Length: counted as it streams
        for _ in range(70):
            yield b" " * 1024

    streamed = await client.post("/v1/notes", content=chunks(), headers=headers)
    assert streamed.status_code == 413


async def test_malformed_json_wrong_content_type_and_bad_limits_are_4xx(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    json_headers = {**alice, "Content-Type": "application/json"}
    malformed = await client.post("/v1/notes", content=b'{"title": ', headers=json_headers)
    assert malformed.status_code == 400
    text_headers = {**alice, "Content-Type": "text/plain"}
    wrong_type = await client.post("/v1/notes", content=b'{"title": "t"}', headers=text_headers)
    assert wrong_type.status_code == 415
    for limit in ("-1", "0", "101", "99999999999999999999", "ten"):
        response = await client.get("/v1/notes", params={"limit": limit}, headers=alice)
        assert response.status_code == 422, limit
    assert (await client.get("/v1/notes/not-a-uuid", headers=alice)).status_code == 422


async def test_if_match_uses_the_strong_comparison_a_weak_etag_never_matches(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    note = await create_note(client, alice)
    url = f"/v1/notes/{note['id']}"
    for weak in ('W/"1"', 'W/"1", "7"'):
        refused = await client.patch(url, json={"body": "b"}, headers={**alice, "If-Match": weak})
        assert refused.status_code == 412, weak
    assert (await client.get(url, headers=alice)).json()["version"] == 1
    for strong in ('"1"', '"7", "1"', "*"):
        version = (await client.get(url, headers=alice)).json()["version"]
        headers = {**alice, "If-Match": strong.replace('"1"', f'"{version}"')}
        assert (await client.patch(url, json={"body": strong}, headers=headers)).status_code == 200
    refused = await client.delete(url, headers={**alice, "If-Match": 'W/"4"'})
    assert refused.status_code == 412
    assert (await client.delete(url, headers={**alice, "If-Match": '"4"'})).status_code == 204


async def test_a_list_page_stops_at_its_byte_budget_and_the_cursor_continues_from_there(
    settings: NotesApiSettings, engine_direct: AsyncEngine
) -> None:
    budget = 200_000
    app = create_app(settings.model_copy(update={"list_page_max_bytes": budget}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            _, key = await create_key(engine_direct, "alice")
            alice = {"Authorization": f"Bearer {key}"}
            created = [
                (await create_note(client, alice, title=f"n{i}", body="x" * 60_000))["id"]
                for i in range(8)
            ]
            seen: list[str] = []
            cursor: str | None = None
            while True:
                params = {"limit": 100} | ({"cursor": cursor} if cursor else {})
                response = await client.get("/v1/notes", params=params, headers=alice)
                page = response.json()
                assert 1 <= len(page["items"]) <= 3  # 3 x 60 kB reach 200 kB: no fourth
                assert len(response.content) <= budget + 70_000  # at most one note past it
                seen += [item["id"] for item in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
    assert seen == list(reversed(created))


async def test_a_note_larger_than_the_byte_budget_still_comes_alone_on_its_page(
    settings: NotesApiSettings, engine_direct: AsyncEngine
) -> None:
    app = create_app(settings.model_copy(update={"list_page_max_bytes": 1000}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            _, key = await create_key(engine_direct, "alice")
            alice = {"Authorization": f"Bearer {key}"}
            for i in range(2):
                await create_note(client, alice, title=f"n{i}", body="y" * 5000)
            first = (await client.get("/v1/notes", headers=alice)).json()
            assert len(first["items"]) == 1
            second = await client.get(
                "/v1/notes", params={"cursor": first["next_cursor"]}, headers=alice
            )
            assert [n["title"] for n in second.json()["items"]] == ["n0"]
            assert second.json()["next_cursor"] is None
