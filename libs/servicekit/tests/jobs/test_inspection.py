"""Read-only inspection finds a job wherever the runtime holds it for a group, and only there."""

import asyncio

from contracts import ArchiveRequested, Priority, job_stream
from servicekit import PermanentError
from servicekit.jobs import Holding, JobRouter, enqueue, locate_jobs
from servicekit.operations import redrive_dead_letters
from servicekit.testing import eventually

from .conftest import Harness, archive_request, fast

STREAM = job_stream(ArchiveRequested.JOB_TYPE, Priority.DEFAULT)


async def _enqueue(harness: Harness, version: int) -> ArchiveRequested:
    request = archive_request(version - 1)
    await enqueue(harness.redis, harness.keys, request, Priority.DEFAULT)
    return request


async def test_jobs_are_found_unread_pending_retrying_or_dead_lettered_and_done_ones_nowhere(
    harness: Harness,
) -> None:
    router = JobRouter(group="g")
    release_running = asyncio.Event()
    done: list[int] = []

    @router.job(ArchiveRequested, **fast(backoff_base=600.0, backoff_cap=600.0))
    async def archive_note(request: ArchiveRequested) -> None:
        if request.version == 1:
            raise PermanentError("owner mismatch")
        if request.version == 2:
            raise ConnectionError("store down")  # retried in ten minutes: stays in the retry set
        if request.version == 3:
            await release_running.wait()
        done.append(request.version)

    # A second group on the stream that never reads: every entry is unread for it.
    await harness.redis.xgroup_create(harness.keys.stream(STREAM), "late", id="0", mkstream=True)
    worker = harness.worker(router)
    async with harness.running(worker):
        dead, retrying, running, succeeded = [await _enqueue(harness, v) for v in (1, 2, 3, 4)]
        job_ids = [str(r.job_id) for r in (dead, retrying, running, succeeded)]

        async def settled() -> bool:
            found = await locate_jobs(harness.redis, harness.keys, STREAM, "g", job_ids)
            holdings = {job_id: held.holding for job_id, held in found.items()}
            return done == [4] and holdings == {
                str(dead.job_id): Holding.DEAD_LETTERED,
                str(retrying.job_id): Holding.RETRYING,
                str(running.job_id): Holding.PENDING,
            }

        await eventually(settled)
        found = await locate_jobs(harness.redis, harness.keys, STREAM, "g", job_ids)
        assert found[str(dead.job_id)].reason == "PermanentError: owner mismatch"
        unread = await locate_jobs(harness.redis, harness.keys, STREAM, "late", job_ids)
        assert {held.holding for held in unread.values()} == {Holding.UNREAD}
        assert set(unread) == set(job_ids)
        release_running.set()


async def test_a_missing_group_will_read_every_entry_so_they_count_as_unread(
    harness: Harness,
) -> None:
    request = await _enqueue(harness, 1)
    found = await locate_jobs(harness.redis, harness.keys, STREAM, "nobody", [str(request.job_id)])
    assert found[str(request.job_id)].holding is Holding.UNREAD


async def test_a_job_on_a_stream_that_does_not_exist_is_held_nowhere(harness: Harness) -> None:
    assert await locate_jobs(harness.redis, harness.keys, STREAM, "g", ["some-job"]) == {}


async def test_a_redriven_entry_is_unread_only_for_the_group_that_failed_it(
    harness: Harness,
) -> None:
    router = JobRouter(group="g")

    @router.job(ArchiveRequested, **fast())
    async def archive_note(request: ArchiveRequested) -> None:
        raise PermanentError("owner mismatch")

    await harness.redis.xgroup_create(harness.keys.stream(STREAM), "other", id="$", mkstream=True)
    async with harness.running(harness.worker(router)):
        request = await _enqueue(harness, 1)
        job_id = str(request.job_id)

        async def dead_lettered() -> bool:
            found = await locate_jobs(harness.redis, harness.keys, STREAM, "g", [job_id])
            return job_id in found and found[job_id].holding is Holding.DEAD_LETTERED

        await eventually(dead_lettered)
        await harness.redis.xgroup_setid(harness.keys.stream(STREAM), "other", id="$")
    await redrive_dead_letters(harness.redis, harness.keys, STREAM)

    for_g = await locate_jobs(harness.redis, harness.keys, STREAM, "g", [job_id])
    assert for_g[job_id].holding is Holding.UNREAD
    assert await locate_jobs(harness.redis, harness.keys, STREAM, "other", [job_id]) == {}
