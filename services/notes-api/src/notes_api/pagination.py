"""Opaque keyset cursors: (created_at, id) of the last item, with a checksum against tampering.

The cursor is not a security token (every query is owner-scoped whatever it says); the checksum
only turns an edited or truncated cursor into a clear 400 instead of a silently different page.
"""

import base64
import binascii
import hashlib
import json
from datetime import datetime
from uuid import UUID

from notes_api.errors import Problem


def _digest(payload: bytes) -> str:
    return hashlib.sha256(b"notes-api-cursor:" + payload).hexdigest()[:16]


def encode_cursor(created_at: datetime, item_id: UUID) -> str:
    payload = json.dumps([created_at.isoformat(), str(item_id)], separators=(",", ":")).encode()
    document = json.dumps({"p": payload.decode(), "s": _digest(payload)}).encode()
    return base64.urlsafe_b64encode(document).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw)
        payload = document["p"].encode()
        if document["s"] != _digest(payload):
            raise ValueError("checksum mismatch")
        created, item_id = json.loads(payload)
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("naive time")
        return moment, UUID(item_id)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError, AttributeError):
        raise Problem(400, "The cursor is invalid; start again without one.") from None
