"""The wire format is plain JSON a non-Python reader can decode."""

import json

import pytest
from faststream.redis.parser import BinaryMessageFormatV1

from servicekit.broker import JSONMessageFormat
from servicekit.wire import decode_envelope, encode_envelope


async def test_json_body_and_headers_round_trip_as_readable_json() -> None:
    frame = await JSONMessageFormat.encode(
        message={"note_id": "n1"}, reply_to=None, headers={"event_type": "x.v1"}, correlation_id="c"
    )
    document = json.loads(frame)
    assert document["body"] == {"note_id": "n1"}
    assert document["headers"]["event_type"] == "x.v1"
    assert document["headers"]["correlation_id"] == "c"
    body, headers = JSONMessageFormat.parse(frame)
    assert json.loads(body) == {"note_id": "n1"}
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("body", [b"plain text", b"\xff\xfe binary", b""])
def test_non_json_bodies_survive(body: bytes) -> None:
    decoded, _ = decode_envelope(encode_envelope(body, {"content-type": "text/plain"}))
    assert decoded == body


async def test_faststream_binary_frames_are_still_read() -> None:
    frame = await BinaryMessageFormatV1.encode(
        message=b"legacy", reply_to=None, headers={"a": "b"}, correlation_id="c"
    )
    body, headers = decode_envelope(frame)
    assert body == b"legacy"
    assert headers["a"] == "b"


@pytest.mark.parametrize("data", [b"\xff\x00garbage", b"[1, 2]", b'{"no_body": 1}'])
def test_foreign_payloads_arrive_as_bodies_without_headers(data: bytes) -> None:
    assert decode_envelope(data) == (data, {})
