"""The platform's message format on Redis Streams: JSON that any reader can decode.

Each stream entry has one field, ``__data__`` (the field FastStream reads), holding::

    {"headers": {"content-type": "application/json", "traceparent": "00-…", …}, "body": {…}}

so ``redis-cli XRANGE`` shows readable headers and body, and a non-Python consumer needs only a
JSON parser. FastStream's default is an opaque binary framing; ``servicekit.broker``'s
``JSONMessageFormat`` replaces it with this one.
"""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["DATA_FIELD", "decode_envelope", "encode_envelope"]

DATA_FIELD = "__data__"
_JSON = "application/json"
_BASE64 = "base64"


def encode_envelope(body: bytes, headers: dict[str, str]) -> bytes:
    """Frame an encoded body and its headers as one JSON document."""
    content_type = headers.get("content-type", "")
    if content_type.startswith(_JSON) and body:
        body_json = body
    else:
        try:
            body_json = json.dumps(body.decode("utf-8")).encode()
        except UnicodeDecodeError:
            headers = {**headers, "content-transfer-encoding": _BASE64}
            body_json = json.dumps(base64.b64encode(body).decode("ascii")).encode()
    header_json = json.dumps(headers, separators=(",", ":")).encode()
    return b'{"headers":' + header_json + b',"body":' + body_json + b"}"


def decode_envelope(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """Split a framed entry into (body bytes, headers); tolerate foreign formats.

    Entries written by FastStream's binary format are read with its parser; any other payload is
    handed over as a body without headers, so the consumer can dead-letter it with a clear reason.
    """
    if not data.startswith(b"{"):
        binary = _faststream_binary(data)
        if binary is not None:
            return binary
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data, {}
    if not isinstance(document, dict) or "body" not in document:
        return data, {}
    headers = document.get("headers") or {}
    if not isinstance(headers, dict):
        headers = {}
    body = document["body"]
    if headers.get("content-transfer-encoding") == _BASE64 and isinstance(body, str):
        return base64.b64decode(body), headers
    if isinstance(body, str) and not str(headers.get("content-type", "")).startswith(_JSON):
        return body.encode(), headers
    return json.dumps(body, separators=(",", ":")).encode(), headers


def _faststream_binary(data: bytes) -> tuple[bytes, dict[str, Any]] | None:
    # Imported here, not at the top: our own frames start with "{", and FastStream costs every
    # process start about half a second of CPU for a format that only foreign producers write.
    from faststream.redis.parser import BinaryMessageFormatV1

    if data.startswith(BinaryMessageFormatV1.IDENTITY_HEADER):
        parsed: tuple[bytes, dict[str, Any]] = BinaryMessageFormatV1.parse(data)
        return parsed
    return None
