import socket

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from notes_api.app import create_app
from notes_api.auth import create_key, hash_key, revoke_key
from notes_api.settings import NotesApiSettings
from servicekit import setup_telemetry

ROUTES = [
    ("GET", "/v1/notes"),
    ("POST", "/v1/notes"),
    ("GET", "/v1/notes/00000000-0000-0000-0000-000000000000"),
    ("PATCH", "/v1/notes/00000000-0000-0000-0000-000000000000"),
    ("DELETE", "/v1/notes/00000000-0000-0000-0000-000000000000"),
    ("POST", "/v1/notes/00000000-0000-0000-0000-000000000000/archive"),
    ("POST", "/v1/notes/00000000-0000-0000-0000-000000000000/copy"),
    ("POST", "/v1/notes:bulk-archive"),
    ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/00000000-0000-0000-0000-000000000000"),
    ("POST", "/v1/jobs/00000000-0000-0000-0000-000000000000/cancel"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_answers_401_with_www_authenticate_without_a_valid_key(
    client: httpx.AsyncClient, engine: AsyncEngine, method: str, path: str
) -> None:
    _, revoked = await create_key(engine, "mallory")
    await revoke_key(engine, revoked)
    for authorization in (
        None,
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-key",
        "Bearer nk_" + "A" * 43,  # well-formed, unknown
        f"Bearer {revoked}",
    ):
        headers = {"Authorization": authorization} if authorization else {}
        body = {"title": "t"} if method in {"POST", "PATCH"} else None
        response = await client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (authorization, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/problem+json"


async def test_a_revoked_key_stops_working_at_once(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    key_id, key = await create_key(engine, "carol")
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/v1/notes", headers=headers)).status_code == 200
    assert await revoke_key(engine, str(key_id)) == 1
    assert (await client.get("/v1/notes", headers=headers)).status_code == 401


async def test_keys_are_high_entropy_and_stored_only_as_hashes(engine: AsyncEngine) -> None:
    from sqlalchemy import text

    _, key = await create_key(engine, "dave")
    assert len(key) >= 40
    async with engine.connect() as connection:
        stored = (await connection.execute(text("SELECT key_hash FROM notes.api_keys"))).scalar()
    assert stored == hash_key(key)
    assert key not in str(stored)


async def test_no_credentials_gets_a_challenge_without_an_error_code_and_a_bad_key_invalid_token(
    client: httpx.AsyncClient,
) -> None:
    # RFC 6750 §3.1: a request without authentication information gets no error code.
    missing = await client.get("/v1/notes")
    assert missing.headers["www-authenticate"] == 'Bearer realm="notes-api"'
    for key in ("not-a-key", "nk_" + "A" * 43):
        bad = await client.get("/v1/notes", headers={"Authorization": f"Bearer {key}"})
        assert bad.status_code == 401
        assert bad.headers["www-authenticate"] == 'Bearer realm="notes-api", error="invalid_token"'


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_missing_or_malformed_key_is_401_without_a_database_connection(
    settings: NotesApiSettings,
) -> None:
    # PostgreSQL unreachable: a request that borrowed a connection first would answer 503.
    down = settings.model_copy(
        update={"database_url": f"postgresql://nobody@127.0.0.1:{_closed_port()}/none"}
    )
    app = create_app(down, setup_telemetry(down))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for method, path in ROUTES:
                for headers in ({}, {"Authorization": "Bearer not-a-key"}):
                    body = {"title": "t"} if method in {"POST", "PATCH"} else None
                    response = await client.request(method, path, json=body, headers=headers)
                    assert response.status_code == 401, (method, path, headers, response.text)
            well_formed = {"Authorization": "Bearer nk_" + "A" * 43}
            assert (await client.get("/v1/notes", headers=well_formed)).status_code == 503
