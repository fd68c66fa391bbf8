"""Page cursors: the last item's (created_at, id), signed with the server's secrets.

A cursor is `base64url(payload).base64url(tag)`: the payload is JSON `[listing, created_at, id]`,
the tag the first 16 bytes of HMAC-SHA256 over it with a secret from `CURSOR_SECRETS` (the first
signs, every one verifies, so a secret is rotated by putting the new one first and dropping the
old once its cursors have aged out). Every query is owner-scoped whatever a cursor says; the
signature makes an edited or forged cursor a clear 400, and the range check keeps a signed one
(from an older release, or a leaked secret) from ever reaching PostgreSQL with a value it refuses.

Without `CURSOR_SECRETS`, the key is derived from `DATABASE_URL` (password included): every
process and replica on one database agrees, across restarts, with nothing to configure. It is
as secret as that URL; production sets `CURSOR_SECRETS` (docs/api.md).
"""

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Request

from notes_api.errors import Problem
from notes_api.settings import NotesApiSettings
from servicekit import get_logger

_log = get_logger("notes_api.cursors")
_TAG_BYTES = 16
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
"""The times a cursor may carry; anything else never came from this API."""
INVALID = "The cursor is invalid; start again without one."


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Signs and verifies cursors with ``keys`` (the first signs, all verify)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one cursor key is needed")
        self._keys = list(keys)

    def _tag(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, payload, hashlib.sha256).digest()[:_TAG_BYTES]

    def sign(self, listing: str, fields: Any) -> str:
        """A signed cursor over any JSON ``fields`` (``encode`` is the one the API issues)."""
        payload = json.dumps([listing, fields], separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._tag(self._keys[0], payload))}"

    def encode(self, listing: str, created_at: datetime, item_id: UUID) -> str:
        """The cursor after the item (``created_at``, ``item_id``) of ``listing``."""
        return self.sign(listing, [created_at.isoformat(), str(item_id)])

    def decode(self, listing: str, cursor: str) -> tuple[datetime, UUID]:
        """The (created_at, id) a cursor of ``listing`` carries; 400 for anything else."""
        try:
            payload_text, tag_text = cursor.split(".")
            payload, tag = _unb64(payload_text), _unb64(tag_text)
            if not any(hmac.compare_digest(tag, self._tag(k, payload)) for k in self._keys):
                raise ValueError("signature")
            issued_for, (created, item_id) = json.loads(payload)
            if issued_for != listing or not isinstance(created, str):
                raise ValueError("listing")
            moment = datetime.fromisoformat(created)
            if moment.tzinfo is None or not EARLIEST <= moment < LATEST:
                raise ValueError("time")
            return moment.astimezone(UTC), UUID(str(item_id))
        except (ValueError, TypeError, binascii.Error, UnicodeError, OverflowError):
            raise Problem(400, INVALID) from None


def cursor_codec(settings: NotesApiSettings) -> CursorCodec:
    """The codec of ``settings``: `CURSOR_SECRETS`, or a key derived from `DATABASE_URL`."""
    if settings.cursor_secrets:
        return CursorCodec([s.get_secret_value().encode() for s in settings.cursor_secrets])
    _log.warning("cursor.secret_derived", reason="CURSOR_SECRETS is not set")
    seed = (settings.database_url or "").encode()
    return CursorCodec([hmac.new(b"notes-api-cursor-key", seed, hashlib.sha256).digest()])


async def get_cursor_codec(request: Request) -> CursorCodec:
    """The app's codec, made from its settings on first use and kept on `app.state`."""
    codec: CursorCodec | None = getattr(request.app.state, "cursors", None)
    if codec is None:
        codec = request.app.state.cursors = cursor_codec(request.app.state.settings)
    return codec


CursorsDep = Annotated[CursorCodec, Depends(get_cursor_codec)]
