"""The job page against a real notes-api (its ASGI app on its own migrated database).

The console reads jobs only through notes-api's operator endpoint: these tests hold the page to
what that endpoint answers, and to its refusals (no such job, a wrong token, not configured).
"""

import html
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis

from console.app import create_app
from console.jobs import JobLookup
from console.settings import ConsoleSettings
from notes_api.app import create_app as create_notes_api
from notes_api.auth import create_key
from notes_api.settings import SCHEMA, NotesApiSettings
from servicekit import setup_telemetry
from servicekit.migrations import migrate
from servicekit.testing import fresh_database

TOKEN = "console-token-for-tests-0123456789"
OPERATOR_TOKEN = "operator-token-for-the-console-0123456789"


@pytest.fixture
async def notes_api(
    postgres_admin_url: str, redis_url: str, stream_prefix: str
) -> AsyncIterator[FastAPI]:
    """notes-api's app on a fresh migrated database, with the console's operator token."""
    async with fresh_database(postgres_admin_url, prefix="console_notes") as url:
        settings = NotesApiSettings(
            database_url=url, redis_url=redis_url, stream_prefix=stream_prefix, ops_port=0,
            rate_limits_enabled=False, operator_tokens=[SecretStr(OPERATOR_TOKEN)],
            log_format="console", log_level="WARNING",
        )  # fmt: skip
        await migrate(settings, SCHEMA, "notes_api.migrations")
        app = create_notes_api(settings, setup_telemetry(settings))
        async with app.router.lifespan_context(app):
            yield app


@pytest.fixture
async def owner(notes_api: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """notes-api as alice (an API key of hers)."""
    _, key = await create_key(notes_api.state.engine, "alice")
    transport = httpx.ASGITransport(app=notes_api)
    async with httpx.AsyncClient(transport=transport, base_url="http://notes.test",
                                 headers={"Authorization": f"Bearer {key}"}) as http:  # fmt: skip
        yield http


def console_for(redis: Redis, redis_url: str, stream_prefix: str, jobs: JobLookup | None
                ) -> httpx.AsyncClient:  # fmt: skip
    settings = ConsoleSettings(redis_url=redis_url, stream_prefix=stream_prefix,
                               console_tokens=f"alice:{TOKEN}", console_cookie_secure=False,
                               tempo_url="https://tempo.example/trace/{trace_id}")  # fmt: skip
    app = create_app(settings, redis=redis, jobs=jobs)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test",
                             headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip


def lookup(notes_api: FastAPI, token: str = OPERATOR_TOKEN) -> JobLookup:
    return JobLookup("http://notes.test", token, transport=httpx.ASGITransport(app=notes_api))


async def archive_job(owner: httpx.AsyncClient) -> dict[str, Any]:
    note = (await owner.post("/v1/notes", json={"title": "t", "body": "b"})).json()
    job = (await owner.post(f"/v1/notes/{note['id']}/archive")).json()
    return {"note": note, "job_id": job["job_id"]}


async def test_the_job_page_shows_another_owners_job_as_notes_api_records_it(
    notes_api: FastAPI, owner: httpx.AsyncClient, redis_client: Redis, redis_url: str,
    stream_prefix: str,
) -> None:  # fmt: skip
    created = await archive_job(owner)
    job_id = created["job_id"]
    recorded = (await owner.get(f"/v1/jobs/{job_id}")).json()

    async with console_for(redis_client, redis_url, stream_prefix, lookup(notes_api)) as console:
        searched = await console.get("/jobs", params={"id": f" {job_id} "})
        assert (searched.status_code, searched.headers["location"]) == (303, f"/jobs/{job_id}")
        page = await console.get(f"/jobs/{job_id}")

        assert page.status_code == 200
        text = html.unescape(page.text)
        assert re.search(r'id="job-status" class="status-accepted">accepted<', text)
        assert "<dd>alice</dd>" in text
        assert created["note"]["id"] in text
        assert f"https://tempo.example/trace/{recorded['trace_id']}" in text
        timeline = re.search(r'id="job-timeline">(.*?)</table>', text, re.S)
        assert timeline
        assert re.findall(r"<td>(accepted)</td>", timeline[1]) == ["accepted"]
        assert "created" in timeline[1]
        nothing = await console.get("/jobs/00000000-0000-4000-8000-000000000000")
        assert nothing.status_code == 404
        assert "no such job" in nothing.text
        assert (await console.get("/jobs/not-a-uuid")).status_code == 400
        assert 'id="job-id-input"' in (await console.get("/jobs")).text


async def test_a_refused_token_or_no_lookup_says_why_and_shows_no_job(
    notes_api: FastAPI, owner: httpx.AsyncClient, redis_client: Redis, redis_url: str,
    stream_prefix: str,
) -> None:  # fmt: skip
    job_id = (await archive_job(owner))["job_id"]
    notes_key = owner.headers["authorization"].split()[1]

    for jobs, reason in ((lookup(notes_api, notes_key), "refused the console's operator token"),
                         (None, "Job lookup is not configured")):  # fmt: skip
        async with console_for(redis_client, redis_url, stream_prefix, jobs) as console:
            page = await console.get(f"/jobs/{job_id}")
            assert page.status_code == 503
            assert reason in html.unescape(page.text)
            assert 'id="job-status"' not in page.text


def test_the_operator_token_comes_from_the_environment_and_is_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONSOLE_TOKENS", f"alice:{TOKEN}")
    assert ConsoleSettings().job_lookup() is None
    monkeypatch.setenv("NOTES_API_URL", "http://notes-api:8000")
    monkeypatch.setenv("NOTES_API_OPERATOR_TOKEN", OPERATOR_TOKEN)
    settings = ConsoleSettings()
    assert settings.job_lookup() == ("http://notes-api:8000", OPERATOR_TOKEN)
    assert OPERATOR_TOKEN in settings.secrets()
