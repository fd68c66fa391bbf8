"""The console's Redis ACL user (deploy/redis/users.acl.template) can do every operator action.

The operations console runs as `console`, not `admin`: every servicekit.operations call it makes
(status, dead letters, redrive with its script and audit record, purge, pause/resume) runs here on
a redis-server loaded with the stack's ACL file, and Redis refuses none of them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from acl_redis import acl_redis
from redis.asyncio import Redis

from servicekit import StreamKeys
from servicekit.operations import (
    AUDIT_STREAM,
    find_dead_letters,
    group_status,
    pause_group,
    purge,
    recent_entries,
    redrive,
    resume_group,
)
from servicekit.wire import DATA_FIELD, encode_envelope

STREAM, GROUP = "notes.created.v1", "archiver"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server binary")
async def test_the_console_user_can_do_every_operator_action(tmp_path: Path) -> None:
    keys = StreamKeys()  # the stack's layout: no prefix, as the ACL patterns are written
    with acl_redis(tmp_path) as server:
        admin = Redis.from_url(server.url("admin"))
        console = Redis.from_url(server.url("console"))
        await admin.xgroup_create(keys.stream(STREAM), GROUP, id="0", mkstream=True)
        for n in range(2):
            data = encode_envelope(b'{"n": %d}' % n, {"content-type": "application/json"})
            await admin.xadd(keys.dead_letters(STREAM), {DATA_FIELD: data, "group": GROUP})

        assert (await group_status(console, keys, STREAM, GROUP)).dead_letters == 2
        letters = await find_dead_letters(console, keys, STREAM)
        dry = await redrive(console, keys, STREAM, operator="sre", dry_run=True)
        assert len(dry.matched) == 2
        await pause_group(console, keys, STREAM, GROUP)
        assert (await group_status(console, keys, STREAM, GROUP)).paused
        await resume_group(console, keys, STREAM, GROUP)
        moved = await redrive(console, keys, STREAM, operator="sre", limit=1)
        assert len(moved.moved) == 1
        [entry] = await recent_entries(console, keys, STREAM)  # the stream page: XREVRANGE
        assert entry.id == moved.moved[0]
        assert await purge(console, keys, STREAM, operator="sre") == 1
        assert letters
        assert await admin.xlen(keys.stream(AUDIT_STREAM)) == 2
        assert server.refusals() == []
        await console.aclose()
        await admin.aclose()
