"""The console on real Redis, through HTTP (httpx on the ASGI app): auth, headers, every action.

What each action does to Redis is servicekit.operations' (tested there); these tests hold the
console to it: what moved, what was audited and as whom, and what is refused (401, 403, 400).
"""

import html
import io
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from console.app import create_app
from console.redrives import Redrives
from console.settings import ConsoleSettings
from contracts import NOTES_CREATED
from servicekit import StreamKeys
from servicekit.logs import configure_logging
from servicekit.operations import AUDIT_STREAM, DeadLetterFilter, group_status
from servicekit.testing import eventually
from servicekit.wire import DATA_FIELD, encode_envelope

GROUP = "archiver"  # reads notes.created.v1 (contracts)
TOKEN = "console-token-for-tests-0123456789"
NOTES_KEY = "nk_" + "a" * 43  # the shape of a notes API key


@pytest.fixture
def keys(stream_prefix: str) -> StreamKeys:
    return StreamKeys(stream_prefix)


@pytest.fixture
async def client(
    redis_client: Redis, stream_prefix: str, redis_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = ConsoleSettings(
        redis_url=redis_url, stream_prefix=stream_prefix, console_tokens=f"alice:{TOKEN}",
        console_cookie_secure=False, tempo_url="https://grafana.example/explore?trace={trace_id}",
    )  # fmt: skip
    app = create_app(settings, redis=redis_client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as http:
        yield http


async def log_in(client: httpx.AsyncClient) -> str:
    """Log in as alice; return the CSRF token the pages carry."""
    response = await client.post("/login", data={"token": TOKEN})
    assert response.status_code == 303, response.text
    page = await client.get("/")
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match[1]


async def dead_letter(redis: Redis, keys: StreamKeys, n: int, error_class: str) -> str:
    data = encode_envelope(json.dumps({"n": n}).encode(), {"content-type": "application/json"})
    fields = {DATA_FIELD: data, "source_stream": NOTES_CREATED, "group": GROUP,
              "error_class": error_class, "error_message": f"no {n}", "attempts": "5",
              "trace_id": "ab" * 16, "span_id": "cd" * 8,
              "errors": json.dumps([{"attempt": 1, "error": "boom"}])}  # fmt: skip
    entry_id = await redis.xadd(keys.dead_letters(NOTES_CREATED), fields)  # type: ignore[arg-type]
    return entry_id.decode()


async def audit(redis: Redis, keys: StreamKeys) -> list[dict[str, str]]:
    entries = await redis.xrange(keys.stream(AUDIT_STREAM))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def test_no_credential_is_401_with_the_login_form(client: httpx.AsyncClient) -> None:
    for path in ("/", "/dead-letters", f"/dead-letters/{NOTES_CREATED}/1-0", "/queues/rows",
                 f"/streams/{NOTES_CREATED}"):  # fmt: skip
        response = await client.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert 'name="token"' in response.text
    response = await client.post("/groups/pause", data={"stream": NOTES_CREATED, "group": GROUP})
    assert response.status_code == 401


async def test_a_notes_api_key_is_refused_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers={"Authorization": f"Bearer {NOTES_KEY}"})
    assert response.status_code == 401
    response = await client.post("/login", data={"token": NOTES_KEY})
    assert response.status_code == 401
    assert "console_session" not in response.headers.get("set-cookie", "")
    client.cookies.set("console_session", "forged.1.2.3")
    response = await client.get("/")
    assert response.status_code == 401


async def test_a_console_token_reads_but_a_post_without_csrf_is_403_and_changes_nothing(
    client: httpx.AsyncClient, redis_client: Redis, keys: StreamKeys
) -> None:
    assert (await client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})).status_code == 200
    form = {"stream": NOTES_CREATED, "group": GROUP}
    with_bearer = await client.post(
        "/groups/pause", data=form, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert with_bearer.status_code == 403
    csrf = await log_in(client)
    assert (await client.post("/groups/pause", data=form)).status_code == 403
    assert (await client.post("/groups/pause", data={**form, "csrf": "x" * 64})).status_code == 403
    cross_site = await client.post(
        "/groups/pause", data={**form, "csrf": csrf}, headers={"Origin": "https://evil.example"}
    )
    assert cross_site.status_code == 403
    redrive = await client.post("/dead-letters/redrive", data={"stream": NOTES_CREATED})
    assert redrive.status_code == 403
    assert not (await group_status(redis_client, keys, NOTES_CREATED, GROUP)).paused
    assert await audit(redis_client, keys) == []


async def test_every_response_carries_the_security_headers_and_the_cookie_is_strict(
    client: httpx.AsyncClient,
) -> None:
    login = await client.post("/login", data={"token": TOKEN})
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    for response in (login, await client.get("/"), await client.get("/static/console.js"),
                     await client.get("/login")):  # fmt: skip
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
    page = (await client.get("/")).text
    assert "<script>" not in page
    assert "style=" not in page
    assert TOKEN not in page


async def test_queues_show_each_declared_group_as_redis_reports_it(
    client: httpx.AsyncClient, redis_client: Redis, keys: StreamKeys
) -> None:
    key = keys.stream(NOTES_CREATED)
    for n in range(3):
        await redis_client.xadd(key, {"n": n})
    await redis_client.xgroup_create(key, GROUP, id="0")
    await redis_client.xreadgroup(GROUP, "worker-1", {key: ">"}, count=1)
    await dead_letter(redis_client, keys, 1, "ValueError")
    await log_in(client)

    rows = (await client.get("/queues/rows")).text

    row = re.search(
        rf'<tr class="" data-stream="{re.escape(NOTES_CREATED)}" data-group="{GROUP}">(.*?)</tr>',
        rows, re.S,
    )  # fmt: skip
    assert row, rows
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row[1], re.S)]
    assert cells[:5] == [NOTES_CREATED, GROUP, "3", "2", "1"]
    assert cells[6].startswith("worker-1")
    assert cells[7] == "1"
    by_lag = (await client.get("/?sort=lag&order=desc")).text
    first_row = re.search(r'data-stream="([^"]+)" data-group="([^"]+)"', by_lag)
    assert first_row
    assert first_row.groups() == (NOTES_CREATED, GROUP)  # the only group with a lag


async def test_pause_and_resume_apply_and_are_audited_as_the_operator(
    client: httpx.AsyncClient, redis_client: Redis, keys: StreamKeys
) -> None:
    csrf = await log_in(client)
    form = {"stream": NOTES_CREATED, "group": GROUP, "csrf": csrf}

    response = await client.post("/groups/pause", data=form)

    assert response.status_code == 303
    assert (await group_status(redis_client, keys, NOTES_CREATED, GROUP)).paused
    assert "PAUSED" in (await client.get("/")).text
    assert (await client.post("/groups/resume", data=form)).status_code == 303
    assert not (await group_status(redis_client, keys, NOTES_CREATED, GROUP)).paused
    records = await audit(redis_client, keys)
    assert [(r["operator"], r["action"], r["stream"]) for r in records] == [
        ("alice", "group.pause", NOTES_CREATED), ("alice", "group.resume", NOTES_CREATED),
    ]  # fmt: skip
    assert json.loads(records[0]["detail"]) == {"group": GROUP}
    unknown = await client.post("/groups/pause", data={**form, "group": "nobody"})
    assert unknown.status_code == 404


async def test_dead_letters_are_found_by_filter_and_one_shows_payload_error_and_trace(
    client: httpx.AsyncClient, redis_client: Redis, keys: StreamKeys
) -> None:
    first = await dead_letter(redis_client, keys, 1, "ValueError")
    second = await dead_letter(redis_client, keys, 2, "KeyError")
    await log_in(client)

    listed = await client.get(
        "/dead-letters", params={"stream": NOTES_CREATED, "error_class": "KeyError"}
    )

    assert listed.status_code == 200
    assert second in listed.text
    assert first not in listed.text
    everything = (await client.get("/dead-letters")).text
    assert first in everything
    assert second in everything
    page = html.unescape((await client.get(f"/dead-letters/{NOTES_CREATED}/{second}")).text)
    assert "KeyError" in page
    assert "no 2" in page
    assert '"n": 2' in page
    assert "ab" * 16 in page
    assert f"https://grafana.example/explore?trace={'ab' * 16}" in page
    assert "boom" in page  # the attempt history
    missing = await client.get(f"/dead-letters/{NOTES_CREATED}/1-1")
    assert missing.status_code == 404


async def test_dry_run_moves_nothing_and_the_redrive_moves_exactly_the_previewed_letters(
    client: httpx.AsyncClient, redis_client: Redis, keys: StreamKeys
) -> None:
    first = await dead_letter(redis_client, keys, 1, "ValueError")
    second = await dead_letter(redis_client, keys, 2, "ValueError")
    other = await dead_letter(redis_client, keys, 3, "KeyError")
    csrf = await log_in(client)
    form = {"csrf": csrf, "stream": NOTES_CREATED, "error_class": "ValueError", "mode": "dry-run"}

    preview = await client.post("/dead-letters/redrive", data=form)

    assert preview.status_code == 200
    assert re.search(r'id="would-move">2<', preview.text)
    assert await redis_client.xlen(keys.dead_letters(NOTES_CREATED)) == 3
    assert await redis_client.xlen(keys.stream(NOTES_CREATED)) == 0
    assert await audit(redis_client, keys) == []
    previewed = re.findall(r'name="id" value="([^"]+)"', preview.text)
    assert sorted(previewed) == sorted([first, second])

    started = await client.post(
        "/dead-letters/redrive",
        data={"csrf": csrf, "stream": NOTES_CREATED, "error_class": "ValueError",
              "mode": "redrive", "id": previewed},
    )  # fmt: skip

    assert started.status_code == 303
    run_page = started.headers["location"]
    progress = await finished(client, run_page)
    assert (progress["moved"], progress["total"], progress["operator"]) == (2, 2, "alice")
    done = await client.get(run_page)
    assert "Redrove 2 of 2" in done.text
    remaining = await redis_client.xrange(keys.dead_letters(NOTES_CREATED))
    assert [entry_id.decode() for entry_id in (e for e, _ in remaining)] == [other]
    moved = await redis_client.xrange(keys.stream(NOTES_CREATED))
    assert len(moved) == 2
    assert all(fields[b"for_group"] == GROUP.encode() for _, fields in moved)
    [record] = await audit(redis_client, keys)
    assert (record["operator"], record["action"], record["count"]) == ("alice", "dlq.redrive", "2")
    assert json.loads(record["detail"])["error_class"] == "ValueError"


async def waited(probe: Callable[[], Awaitable[bool]], what: Callable[[], str]) -> None:
    """``eventually(probe)``, failing with what was awaited and what was seen."""
    try:
        await eventually(probe, within=30)
    except AssertionError:
        pytest.fail(f"timed out waiting for {what()}")


async def finished(client: httpx.AsyncClient, run_page: str) -> dict[str, Any]:
    """Poll a redrive's progress until it is finished; return the last figures."""
    seen: list[dict[str, Any]] = []

    async def done() -> bool:
        seen.append((await client.get(f"{run_page}/progress")).json())
        return bool(seen[-1]["finished"])

    await waited(done, lambda: f"the redrive to finish; last seen {seen[-1:]}")
    return seen[-1]


async def test_a_paced_redrive_runs_in_the_background_and_its_progress_goes_up_to_done(
    client: httpx.AsyncClient, redis_client: Redis, keys: StreamKeys
) -> None:
    ids = [await dead_letter(redis_client, keys, n, "ValueError") for n in range(3)]
    csrf = await log_in(client)

    # One a second: the first moves at once, the others 1 s and 2 s later.
    started = await client.post("/dead-letters/redrive", data={
        "csrf": csrf, "stream": NOTES_CREATED, "mode": "redrive", "id": ids, "per_second": "1",
    })  # fmt: skip

    assert started.status_code == 303
    run_page = started.headers["location"]
    page = (await client.get(run_page)).text
    assert 'data-finished="no"' in page  # the request answered before the redrive ended
    assert 'id="run-progress"' in page
    observed: list[int] = []

    async def done() -> bool:
        progress = (await client.get(f"{run_page}/progress")).json()
        if not observed or observed[-1] != progress["moved"]:
            observed.append(progress["moved"])
        return bool(progress["finished"])

    await waited(done, lambda: f"the redrive to finish; moved so far {observed}")
    assert observed == sorted(observed)
    assert observed[-1] == 3
    assert any(0 < moved < 3 for moved in observed), observed  # seen part-way, not only at the end
    final = (await client.get(run_page)).text
    assert "Redrove 3 of 3" in final
    assert 'data-finished="yes"' in final
    assert run_page.rsplit("/", 1)[1] in (await client.get("/redrives")).text
    [record] = await audit(redis_client, keys)
    assert (record["operator"], record["count"]) == ("alice", "3")
    assert (await client.get("/redrives/nope/progress")).status_code == 404


async def test_purge_needs_the_typed_confirmation_then_deletes_and_is_audited(
    client: httpx.AsyncClient, redis_client: Redis, keys: StreamKeys
) -> None:
    gone = await dead_letter(redis_client, keys, 1, "ValueError")
    kept = await dead_letter(redis_client, keys, 2, "ValueError")
    csrf = await log_in(client)
    form = {"csrf": csrf, "stream": NOTES_CREATED, "id": gone}

    refused = await client.post("/dead-letters/purge", data=form)

    assert refused.status_code == 400
    assert await redis_client.xlen(keys.dead_letters(NOTES_CREATED)) == 2
    done = await client.post("/dead-letters/purge", data={**form, "confirm": "purge"})
    assert done.status_code == 200
    remaining = await redis_client.xrange(keys.dead_letters(NOTES_CREATED))
    assert [entry_id.decode() for entry_id, _ in remaining] == [kept]
    [record] = await audit(redis_client, keys)
    assert (record["operator"], record["action"], record["count"]) == ("alice", "dlq.purge", "1")


async def test_health_needs_no_operator_and_shows_nothing(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")


async def test_logins_are_logged_by_operator_and_no_token_reaches_the_log(
    client: httpx.AsyncClient,
) -> None:
    lines = io.StringIO()
    configure_logging(service="console", stream=lines, secrets=[TOKEN])
    try:
        await client.post("/login", data={"token": NOTES_KEY})
        await log_in(client)
    finally:
        configure_logging(service="console")
    events = [json.loads(line) for line in lines.getvalue().splitlines()]
    console = [e for e in events if e["event"].startswith("console.")]
    assert [e["event"] for e in console] == ["console.login_refused", "console.logged_in"]
    assert console[-1]["operator"] == "alice"
    assert TOKEN not in lines.getvalue()
    assert NOTES_KEY not in lines.getvalue()


def test_tokens_come_from_the_environment_and_short_or_missing_ones_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONSOLE_TOKENS", f"alice:{TOKEN},bob:{TOKEN}-bob")
    assert ConsoleSettings().operators() == {TOKEN: "alice", f"{TOKEN}-bob": "bob"}
    assert f"{TOKEN}-bob" in ConsoleSettings().secrets()
    monkeypatch.setenv("CONSOLE_TOKENS", "alice:short")
    with pytest.raises(ValueError, match="at least"):
        ConsoleSettings().operators()
    monkeypatch.delenv("CONSOLE_TOKENS")
    with pytest.raises(ValueError, match="CONSOLE_TOKEN"):
        ConsoleSettings().operators()


async def test_a_streams_page_shows_its_groups_and_newest_entries_decoded_secrets_masked(
    client: httpx.AsyncClient, redis_client: Redis, keys: StreamKeys
) -> None:
    key = keys.stream(NOTES_CREATED)
    trace = "0af7651916cd43dd8448eb211c80319c"
    for n in range(3):
        body = {"type": NOTES_CREATED, "n": n, "note": {"title": f"title {n}"},
                "password": "hunter2-hunter2", "body": f"Bearer {TOKEN}"}  # fmt: skip
        headers = {"content-type": "application/json", "event_type": NOTES_CREATED,
                   "traceparent": f"00-{trace}-b7ad6b7169203331-01"}  # fmt: skip
        await redis_client.xadd(key, {"__data__": encode_envelope(json.dumps(body).encode(),
                                                                  headers)})  # fmt: skip
    await redis_client.xgroup_create(key, GROUP, id="0")
    await redis_client.xadd(key, {"junk": "x"})
    await log_in(client)

    page = await client.get(f"/streams/{NOTES_CREATED}", params={"count": 3})

    assert page.status_code == 200
    text = html.unescape(page.text)
    assert re.search(r'id="stream-length">4<', text)
    assert f'data-group="{GROUP}"' in text
    entries = re.findall(r'data-entry="([^"]+)"', text)
    assert len(entries) == 3
    assert "no __data__ field" in text  # the newest, foreign entry, shown raw
    assert '"n": 2' in text
    assert '"n": 1' in text
    assert '"n": 0' not in text  # beyond count
    assert f"https://grafana.example/explore?trace={trace}" in text
    assert "hunter2" not in text
    assert TOKEN not in text
    assert '"password": "***"' in text
    older = html.unescape((await client.get(
        f"/streams/{NOTES_CREATED}", params={"count": 3, "before": entries[-1]})).text)  # fmt: skip
    assert '"n": 0' in older
    assert 'id="older"' not in older
    assert (await client.get("/streams/no.such.v1")).status_code == 404
    bad = await client.get(f"/streams/{NOTES_CREATED}", params={"before": "x; DROP"})
    assert bad.status_code == 400
    assert f'href="/streams/{NOTES_CREATED}"' in (await client.get("/")).text


async def test_a_redrive_stopped_part_way_records_what_it_moved(
    redis_client: Redis, keys: StreamKeys
) -> None:
    ids = [await dead_letter(redis_client, keys, n, "ValueError") for n in range(3)]
    redrives = Redrives(keys)
    run = redrives.start(redis_client, NOTES_CREATED, DeadLetterFilter(ids=frozenset(ids)),
                         operator="alice", per_second=0.1)  # fmt: skip
    await waited(lambda: _true(len(run.moved) == 1), lambda: f"one letter moved; run {run}")

    await redrives.stop()  # the console shutting down, 10 s before the second letter

    assert run.finished
    assert run.error == "stopped: the console shut down"
    assert await redis_client.xlen(keys.dead_letters(NOTES_CREATED)) == 2
    [record] = await audit(redis_client, keys)
    assert (record["operator"], record["action"], record["count"]) == ("alice", "dlq.redrive", "1")
    assert json.loads(record["detail"])["ended"] == "stopped: the console shut down"


async def _true(value: bool) -> bool:
    return value


async def test_a_previewed_letter_purged_before_the_redrive_is_counted_gone(
    redis_client: Redis, keys: StreamKeys
) -> None:
    ids = [await dead_letter(redis_client, keys, n, "ValueError") for n in range(2)]
    await redis_client.xdel(keys.dead_letters(NOTES_CREATED), ids[0])  # someone else's purge
    redrives = Redrives(keys)

    run = redrives.start(redis_client, NOTES_CREATED, DeadLetterFilter(ids=frozenset(ids)),
                         operator="alice", per_second=None)  # fmt: skip
    await waited(lambda: _true(run.finished), lambda: f"the run to end; run {run}")

    assert run.progress() | {"started_at": None, "finished_at": None, "id": None} == {
        "id": None, "stream": NOTES_CREATED, "operator": "alice", "total": 2, "done": 1,
        "moved": 1, "gone": 1, "error": None, "finished": True, "started_at": None,
        "finished_at": None,
    }  # fmt: skip
