"""No input turns into a 500: the extremes of every typed parameter of every route.

Each request is sent with a valid key against a database holding a note and a job, so the input
reaches the route's statements when validation lets it through. A database error caused by a value
(out of range, not representable) must be a 4xx, never a 500.
"""

import base64
import hashlib
import json
from typing import Any

import httpx
import pytest

from .conftest import create_note

_HUGE = "9" * 40
_ODD = ["\u202e\u200b\ufeff", "😀" * 50, "Ω≈ç√∫", "\ud7ff\ue000\uffff", "a\tb\nc\rd", "%00", "'\""]
_UUIDS = [
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "not-a-uuid",
    "0" * 1000,
]
_TIMES = [
    "0001-01-01T00:00:00+00:01",
    "0001-01-01T00:00:00+23:59",
    "0001-01-01T00:00:00-23:59",
    "9999-12-31T23:59:59-23:59",
    "9999-12-31T23:59:59+23:59",
    "1970-01-01T00:00:00Z",
    "2000-02-30T00:00:00Z",
    "2024-01-01T00:00:00",
    "294277-01-01T00:00:00Z",
]
_INTS = ["-1", "0", "1", "100", "101", "2147483647", "2147483648", "-2147483649", _HUGE,
         "1e309", "NaN", "inf", "0x10", " 1"]  # fmt: skip


def _old_style_cursor(moment: str, item_id: str) -> str:
    """A cursor as the unkeyed scheme made them: anyone could compute the checksum."""
    payload = json.dumps([moment, item_id], separators=(",", ":")).encode()
    digest = hashlib.sha256(b"notes-api-cursor:" + payload).hexdigest()[:16]
    document = json.dumps({"p": payload.decode(), "s": digest}).encode()
    return base64.urlsafe_b64encode(document).decode().rstrip("=")


_CURSORS = [
    *(_old_style_cursor(t, "00000000-0000-0000-0000-000000000000") for t in _TIMES),
    _old_style_cursor("2024-01-01T00:00:00+00:00", "not-a-uuid"),
    "",
    "x" * 512,
    "e30",
    "....",
]


def _requests(note_id: str, job_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, url, httpx keyword arguments) for every route with extreme values."""
    cases: list[tuple[str, str, dict[str, Any]]] = []
    for limit in _INTS:
        cases += [("GET", "/v1/notes", {"params": {"limit": limit}}),
                  ("GET", "/v1/jobs", {"params": {"limit": limit}})]  # fmt: skip
    for cursor in _CURSORS:
        cases += [("GET", "/v1/notes", {"params": {"cursor": cursor}}),
                  ("GET", "/v1/jobs", {"params": {"cursor": cursor}})]  # fmt: skip
    for text in [*_ODD, "x" * 33, "x" * 201, "%", "_", "\\", "%%%", "___", "\\\\\\", "abc" * 66]:
        note = {"title": text[:200] or "t", "tags": [text[:32]]}
        cases += [
            ("GET", "/v1/notes", {"params": {"q": text}}),
            ("GET", "/v1/notes", {"params": {"tag": text}}),
            ("POST", "/v1/notes", {"json": {**note, "body": text}}),
            ("PATCH", f"/v1/notes/{note_id}", {"json": note}),
            ("POST", f"/v1/notes/{note_id}/copy", {"json": {"title": text[:200] or "t"}}),
            ("POST", "/v1/notes:bulk-archive", {"json": {"tag": text[:32] or "t"}}),
        ]  # fmt: skip
    for archived in ["true", "false", "1", "yes", "maybe", _HUGE]:
        cases.append(("GET", "/v1/notes", {"params": {"archived": archived}}))
    for status in ["accepted", "ACCEPTED", "", "x" * 1000, "dead"]:
        cases.append(("GET", "/v1/jobs", {"params": {"status": status}}))
    for some_id in [*_UUIDS, note_id, job_id]:
        cases += [
            ("GET", f"/v1/notes/{some_id}", {}),
            ("PATCH", f"/v1/notes/{some_id}", {"json": {"body": "b"}}),
            ("DELETE", f"/v1/notes/{some_id}", {"headers": {"If-Match": '"999"'}}),
            ("POST", f"/v1/notes/{some_id}/archive", {}),
            ("POST", f"/v1/notes/{some_id}/copy", {"json": {}}),
            ("GET", f"/v1/jobs/{some_id}", {}),
            ("POST", f"/v1/jobs/{some_id}/cancel", {}),
        ]
    for moment in _TIMES:
        cases.append(("POST", f"/v1/notes/{note_id}/archive", {"json": {"run_at": moment}}))
    for days in [*_INTS, 36500, 36501, -1, 10**30, 1.5, True]:
        value: Any = days
        if isinstance(days, str):
            try:
                value = int(days)
            except ValueError:
                value = days
        cases.append(("POST", "/v1/notes:bulk-archive", {"json": {"not_updated_for_days": value}}))
    for if_match in ['"1"', 'W/"1"', "*", '"' + _HUGE + '"', "x" * 201, ",,,", '"-1"']:
        cases.append(
            ("PATCH", f"/v1/notes/{note_id}", {"json": {}, "headers": {"If-Match": if_match}})
        )
    for key in ["k", "x" * 255, "x" * 256, " ", "ü"]:
        cases.append(
            ("POST", "/v1/notes", {"json": {"title": "t"}, "headers": {"Idempotency-Key": key}})
        )
    return cases


@pytest.mark.timeout(300)
async def test_no_extreme_value_of_any_parameter_answers_500(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    note = await create_note(client, alice)
    job = (await client.post(f"/v1/notes/{note['id']}/archive", headers=alice)).json()
    failures: list[str] = []
    for method, url, options in _requests(note["id"], job["job_id"]):
        headers = {**alice, **options.pop("headers", {})}
        try:
            response = await client.request(method, url, headers=headers, **options)
        except UnicodeEncodeError:
            continue  # httpx itself refuses to send it; nothing reached the server
        if response.status_code >= 500:
            failures.append(f"{method} {url} {options} -> {response.status_code}")
    assert not failures, "\n".join(failures)
