"""Cursors are signed with the server's secrets (rotatable) and range-checked: bad ones are 400."""

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import pytest
from pydantic import SecretStr

from notes_api.cursors import CursorCodec, cursor_codec
from notes_api.errors import Problem
from notes_api.settings import NotesApiSettings

from .conftest import create_note

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _unkeyed(moment: str, item_id: str) -> str:
    """A cursor as the old scheme made them: an unkeyed checksum anyone can compute."""
    payload = json.dumps([moment, item_id], separators=(",", ":")).encode()
    digest = hashlib.sha256(b"notes-api-cursor:" + payload).hexdigest()[:16]
    document = json.dumps({"p": payload.decode(), "s": digest}).encode()
    return base64.urlsafe_b64encode(document).decode().rstrip("=")


async def test_a_forged_cursor_with_a_time_postgresql_cannot_hold_is_400_not_500(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    await create_note(client, alice)
    forged = _unkeyed("0001-01-01T00:00:00+00:01", str(uuid4()))
    for path in ("/v1/notes", "/v1/jobs"):
        response = await client.get(path, params={"cursor": forged}, headers=alice)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"


def test_a_cursor_round_trips_and_is_bound_to_its_listing() -> None:
    codec = CursorCodec([b"k" * 32])
    item = uuid4()
    token = codec.encode("notes", NOW, item)
    assert codec.decode("notes", token) == (NOW, item)
    with pytest.raises(Problem) as raised:
        codec.decode("jobs", token)
    assert raised.value.status == 400


def test_rotation_the_first_secret_signs_and_every_secret_verifies() -> None:
    old, new = b"o" * 32, b"n" * 32
    item = uuid4()
    issued_before = CursorCodec([old]).encode("notes", NOW, item)
    rotated = CursorCodec([new, old])
    assert rotated.decode("notes", issued_before) == (NOW, item)
    issued_after = rotated.encode("notes", NOW, item)
    assert CursorCodec([new]).decode("notes", issued_after) == (NOW, item)
    with pytest.raises(Problem):
        CursorCodec([old]).decode("notes", issued_after)  # signed with the new one, not the old
    with pytest.raises(Problem):
        CursorCodec([b"x" * 32]).decode("notes", issued_before)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, tzinfo=UTC),
        datetime(1969, 12, 31, tzinfo=UTC),
        NOW.replace(tzinfo=None),
        NOW + timedelta(days=365 * 200),
    ],
    ids=["year-1", "year-9999", "before-1970", "naive", "far-future"],
)  # fmt: skip
def test_a_correctly_signed_cursor_outside_the_sane_range_is_rejected(moment: datetime) -> None:
    codec = CursorCodec([b"k" * 32])
    token = codec.sign("notes", [moment.isoformat(), str(uuid4())])
    with pytest.raises(Problem) as raised:
        codec.decode("notes", token)
    assert raised.value.status == 400


@pytest.mark.parametrize(
    "fields", [["2026-01-01T00:00:00+00:00", "not-a-uuid"], ["x"], "text", [1, 2], None, {}]
)
def test_a_correctly_signed_cursor_of_the_wrong_shape_is_rejected(fields: object) -> None:
    codec = CursorCodec([b"k" * 32])
    with pytest.raises(Problem):
        codec.decode("notes", codec.sign("notes", fields))


def test_cursor_secrets_come_from_a_comma_separated_list_and_are_registered_as_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = "a" * 32, "b" * 40
    monkeypatch.setenv("CURSOR_SECRETS", f"{first}, {second}")
    settings = NotesApiSettings(database_url="postgresql://u@h/d")
    assert [s.get_secret_value() for s in settings.cursor_secrets] == [first, second]
    assert first in settings.secrets()
    assert second in settings.secrets()
    assert first not in repr(settings)
    codec = cursor_codec(settings)
    item = uuid4()
    signed = codec.encode("notes", NOW, item)
    assert CursorCodec([first.encode()]).decode("notes", signed) == (NOW, item)


def test_a_short_cursor_secret_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="32"):
        NotesApiSettings(cursor_secrets=[SecretStr("short")])


def test_without_cursor_secrets_every_process_on_one_database_derives_the_same_key() -> None:
    one = cursor_codec(NotesApiSettings(database_url="postgresql://u:pw@h/d"))
    two = cursor_codec(NotesApiSettings(database_url="postgresql://u:pw@h/d"))
    other = cursor_codec(NotesApiSettings(database_url="postgresql://u:other@h/d"))
    item = uuid4()
    token = one.encode("notes", NOW, item)
    assert two.decode("notes", token) == (NOW, item)
    with pytest.raises(Problem):
        other.decode("notes", token)
