"""The operator module on real Redis: group status, filtered redrive with its audit, prune, pause.

What `jobsctl` shows and does is these functions; here each is held to what Redis itself reports.
"""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

from servicekit.jobs import JobRouter, publish
from servicekit.operations import (
    AUDIT_STREAM,
    DeadLetterFilter,
    find_dead_letters,
    group_status,
    pause_group,
    prune_consumers,
    purge,
    recent_entries,
    redrive,
    resume_group,
)
from servicekit.testing import eventually
from servicekit.wire import DATA_FIELD, encode_envelope

from .conftest import Harness, Pinged, fast

STREAM = "test.pinged.v1"


async def _dead_letter(harness: Harness, n: int, *, group: str, error_class: str) -> str:
    body = json.dumps({"n": n}).encode()
    data = encode_envelope(body, {"content-type": "application/json", "event_type": STREAM})
    fields = {
        DATA_FIELD: data,
        "source_stream": STREAM,
        "group": group,
        "error_class": error_class,
        "error_message": f"failed {n}",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
    }
    entry_id = await harness.redis.xadd(harness.keys.dead_letters(STREAM), fields)  # type: ignore[arg-type]
    return entry_id.decode()


async def test_group_status_is_what_xinfo_and_xpending_report(harness: Harness) -> None:
    redis, key = harness.redis, harness.keys.stream(STREAM)
    for n in range(5):
        await redis.xadd(key, {"n": str(n)})
    await redis.xgroup_create(key, "g", id="0")
    await redis.xreadgroup("g", "c1", {key: ">"}, count=2)  # delivered, not acknowledged
    await redis.xreadgroup("g", "c2", {key: ">"}, count=1)
    await _dead_letter(harness, 9, group="g", error_class="ValueError")
    await pause_group(redis, harness.keys, STREAM, "g")

    status = await group_status(redis, harness.keys, STREAM, "g")

    [info] = await redis.xinfo_groups(key)
    summary = await redis.xpending(key, "g")
    assert status.exists
    assert status.paused
    assert status.length == await redis.xlen(key) == 5
    assert status.lag == info["lag"] == 2
    assert status.pending == info["pending"] == summary["pending"] == 3
    assert {c.name: c.pending for c in status.consumers} == {"c1": 2, "c2": 1}
    oldest_ms = int(summary["min"].decode().split("-")[0])
    age = status.oldest_pending_age_seconds
    assert age is not None
    assert abs(age - (time.time() - oldest_ms / 1000)) < 5
    assert status.dead_letters == 1

    missing = await group_status(redis, harness.keys, "test.never.v1", "g")
    assert not missing.exists
    assert missing.length == 0
    assert missing.pending == 0


async def test_redrive_moves_exactly_the_filtered_letters_once_with_an_audit_record(
    harness: Harness,
) -> None:
    redis, keys = harness.redis, harness.keys
    wanted = [await _dead_letter(harness, n, group="g", error_class="ValueError") for n in (1, 2)]
    await _dead_letter(harness, 3, group="g", error_class="KeyError")
    await _dead_letter(harness, 4, group="other", error_class="ValueError")
    where = DeadLetterFilter(group="g", error_class="ValueError")

    dry = await redrive(redis, keys, STREAM, where, operator="ann", dry_run=True)
    assert [letter.id for letter in dry.matched] == wanted
    assert dry.moved == []
    assert await redis.xlen(keys.dead_letters(STREAM)) == 4
    assert await redis.exists(keys.stream(STREAM), keys.stream(AUDIT_STREAM)) == 0

    # Two operators at once: each letter still moves once.
    first, second = await asyncio.gather(
        redrive(redis, keys, STREAM, where, operator="ann"),
        redrive(redis, keys, STREAM, where, operator="bob"),
    )
    assert len(first.moved) + len(second.moved) == 2
    entries = await redis.xrange(keys.stream(STREAM))
    assert len(entries) == 2
    for _, fields in entries:
        assert fields[b"for_group"] == b"g"
        envelope = json.loads(fields[DATA_FIELD.encode()])
        assert envelope["headers"]["redriven_from"] in wanted
        assert envelope["headers"]["failed_traceparent"].startswith("00-0af76519")
    left = await find_dead_letters(redis, keys, STREAM)
    assert {letter.meta["error_class"] for letter in left} == {"KeyError", "ValueError"}
    assert {letter.meta["group"] for letter in left} == {"g", "other"}

    audit = [fields for _, fields in await redis.xrange(keys.stream(AUDIT_STREAM))]
    assert {a[b"operator"] for a in audit} == {b"ann", b"bob"}
    assert sum(int(a[b"count"]) for a in audit) == 2
    assert all(a[b"action"] == b"dlq.redrive" and a[b"stream"] == STREAM.encode() for a in audit)
    assert json.loads(audit[0][b"detail"]) == {"error_class": "ValueError", "group": "g"}


async def test_redrive_tells_each_letter_with_its_new_entry_id(harness: Harness) -> None:
    redis, keys = harness.redis, harness.keys
    ids = [await _dead_letter(harness, n, group="g", error_class="ValueError") for n in (1, 2, 3)]
    seen: list[tuple[str, str | None]] = []

    result = await redrive(
        redis,
        keys,
        STREAM,
        operator="ann",
        on_letter=lambda letter, new_id: seen.append((letter.id, new_id)),
    )

    assert seen == list(zip(ids, result.moved, strict=True))
    assert [e[0].decode() for e in await redis.xrange(keys.stream(STREAM))] == result.moved


async def test_recent_entries_are_the_newest_first_decoded_with_their_trace(
    harness: Harness,
) -> None:
    redis, keys = harness.redis, harness.keys
    published = [await publish(redis, keys, STREAM, Pinged(producer="t", n=n)) for n in range(5)]
    await redis.xadd(keys.stream(STREAM), {"junk": "x"})  # a foreign entry
    await redis.xadd(keys.stream(STREAM), {DATA_FIELD: b"not json"})
    traced = encode_envelope(b'{"type": "test.other.v1"}', {
        "content-type": "application/json",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    })  # fmt: skip
    await redis.xadd(keys.stream(STREAM), {DATA_FIELD: traced, "for_group": "g"})

    [last] = await recent_entries(redis, keys, STREAM, count=1)
    assert (last.event_type, last.trace_id) == ("test.other.v1", "0af7651916cd43dd8448eb211c80319c")
    assert last.fields == {"for_group": "g"}
    newest = await recent_entries(redis, keys, STREAM, count=4, before=last.id)

    assert [e.problem is None for e in newest] == [False, False, True, True]
    assert "JSON" in str(newest[0].problem)
    assert newest[0].body == "not json"
    assert newest[1].fields == {"junk": "x"}
    assert [e.id for e in newest[2:]] == published[:2:-1][:2]
    entry = newest[2]
    assert entry.event_type == STREAM
    assert entry.body["n"] == 4
    assert entry.trace_id is None  # published outside any span
    assert entry.added_at > 0
    older = await recent_entries(redis, keys, STREAM, count=10, before=entry.id)
    assert [e.body["n"] for e in older] == [3, 2, 1, 0]
    assert await recent_entries(redis, keys, "test.nothing.v1") == []


async def test_a_time_window_and_purge_take_only_their_letters(harness: Harness) -> None:
    redis, keys = harness.redis, harness.keys
    old = await _dead_letter(harness, 1, group="g", error_class="ValueError")
    since = datetime.now(UTC) + timedelta(milliseconds=5)
    await eventually(lambda: datetime.now(UTC) > since + timedelta(milliseconds=5))
    new = await _dead_letter(harness, 2, group="g", error_class="ValueError")

    recent = await find_dead_letters(redis, keys, STREAM, DeadLetterFilter(since=since))
    assert [letter.id for letter in recent] == [new]
    older = await find_dead_letters(redis, keys, STREAM, DeadLetterFilter(until=since))
    assert [letter.id for letter in older] == [old]

    assert await purge(redis, keys, STREAM, DeadLetterFilter(until=since), operator="ann") == 1
    assert [letter.id for letter in await find_dead_letters(redis, keys, STREAM)] == [new]
    [(_, record)] = await redis.xrange(keys.stream(AUDIT_STREAM))
    assert record[b"action"] == b"dlq.purge"
    assert record[b"count"] == b"1"


async def test_prune_never_removes_a_consumer_that_owns_entries(harness: Harness) -> None:
    redis, key = harness.redis, harness.keys.stream(STREAM)
    await redis.xadd(key, {"n": "1"})
    await redis.xgroup_create(key, "g", id="0")
    await redis.xreadgroup("g", "busy", {key: ">"}, count=1)
    await redis.xgroup_createconsumer(key, "g", "gone")

    pruned = await prune_consumers(redis, harness.keys, STREAM, "g", idle_for=0)

    assert pruned == ["gone"]
    consumers = await redis.xinfo_consumers(key, "g")
    assert [c["name"] for c in consumers] == [b"busy"]
    assert (await redis.xpending(key, "g"))["pending"] == 1


PAUSE_BOUND = 1.0 + 0.05
"""A worker reads the pause flags every second; a read already blocking may still take one batch
(`block_ms`, 50 ms with `fast()`). docs/operations.md states this bound."""


async def test_a_running_group_paused_takes_nothing_new_after_the_bound_and_resumes(
    harness: Harness,
) -> None:
    router = JobRouter(group="g")
    seen: list[int] = []

    @router.event(Pinged, stream=STREAM, **fast())
    async def record_ping(event: Pinged) -> None:
        seen.append(event.n)

    async with harness.running(harness.worker(router)):
        await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=0))
        await eventually(lambda: seen == [0])
        paused_at = time.monotonic()
        await pause_group(harness.redis, harness.keys, STREAM, "g")
        sent: list[tuple[int, float]] = []
        while (since := time.monotonic() - paused_at) < PAUSE_BOUND + 0.3:
            n = len(sent) + 1
            await publish(harness.redis, harness.keys, STREAM, Pinged(producer="t", n=n))
            sent.append((n, since))
            await asyncio.sleep(0.02)  # pacing the publisher, not waiting for the worker
        await asyncio.sleep(0.5)  # a window in which a running group would have handled them
        late = {n for n, at in sent if at > PAUSE_BOUND}
        assert late
        assert not late & set(seen), f"handled after the pause bound: {late & set(seen)}"
        status = await group_status(harness.redis, harness.keys, STREAM, "g")
        assert status.paused
        assert status.lag is not None
        assert status.lag >= len(late)

        await resume_group(harness.redis, harness.keys, STREAM, "g")
        await eventually(lambda: set(seen) == {0} | {n for n, _ in sent}, within=3)
