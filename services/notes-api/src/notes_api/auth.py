"""API keys: high-entropy random tokens, stored only as SHA-256 hashes.

A slow password hash is not needed (the key has ~256 bits of entropy, nothing to brute-force) and
would cap throughput, since every request checks its key. Revocation is a column read on every
request, so it takes effect at once.
"""

import contextlib
import hashlib
import re
import secrets
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import bindparam, insert, or_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col, select

from contracts import utc_now
from notes_api.models import ApiKey

KEY_PREFIX = "nk_"
_KEY_SHAPE = re.compile(r"nk_[A-Za-z0-9_-]{43}")
KEY_LIKE = re.compile(r"nk_[A-Za-z0-9_-]{16,}")
"""What the log redactor masks: wider than a valid key, so a truncated or padded paste goes too."""


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def well_formed(key: str) -> bool:
    return _KEY_SHAPE.fullmatch(key) is not None


# Built once with bound parameters: SQLAlchemy then reuses its compiled form on every request.
_OWNER_BY_KEY_HASH = select(ApiKey.owner_id).where(
    ApiKey.key_hash == bindparam("key_hash"), col(ApiKey.revoked_at).is_(None)
)


async def owner_for_key(connection: AsyncConnection, key: str) -> str | None:
    """Return the owner of an active key, or None (malformed, unknown or revoked)."""
    if not well_formed(key):
        return None
    result = await connection.execute(_OWNER_BY_KEY_HASH, {"key_hash": hash_key(key)})
    owner: str | None = result.scalar_one_or_none()
    return owner


async def create_key(engine: AsyncEngine, owner: str) -> tuple[UUID, str]:
    """Create a key for ``owner``; return its id and the key (shown once, never stored)."""
    key, key_id = new_key(), uuid4()
    async with engine.begin() as connection:
        await connection.execute(
            insert(ApiKey).values(
                id=key_id, owner_id=owner, key_hash=hash_key(key), created_at=utc_now()
            )
        )
    return key_id, key


async def revoke_key(engine: AsyncEngine, key_or_id: str) -> int:
    """Revoke a key given by its value or its id; return how many keys were revoked."""
    match: list[Any] = [ApiKey.key_hash == hash_key(key_or_id)]
    with contextlib.suppress(ValueError):
        match.append(ApiKey.id == UUID(key_or_id))
    async with engine.begin() as connection:
        result = await connection.execute(
            update(ApiKey)
            .where(or_(*match), col(ApiKey.revoked_at).is_(None))
            .values(revoked_at=utc_now())
        )
    return result.rowcount
