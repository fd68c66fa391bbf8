"""The example in docs/async-jobs.md is real code, and it runs on the runtime as documented."""

from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

from contracts import ArchiveRequested, NoteSnapshot, Priority
from servicekit.jobs import enqueue
from servicekit.operations import list_dead_letters
from servicekit.testing import eventually

from . import example_job
from .conftest import Harness

DOC = Path(__file__).parents[4] / "docs" / "async-jobs.md"


def test_document_shows_the_tested_example() -> None:
    lines = Path(example_job.__file__).read_text().splitlines()
    body = "\n".join(line for line in lines if not line.startswith("#"))
    assert body.strip() in DOC.read_text()


class FakeStore:
    def __init__(self) -> None:
        self.notes: dict[tuple[object, int], NoteSnapshot] = {}
        self.frozen: list[NoteSnapshot] = []

    async def version(self, note_id: object, version: int) -> NoteSnapshot | None:
        return self.notes.get((note_id, version))

    async def freeze(self, note: NoteSnapshot) -> None:
        self.frozen.append(note)


def snapshot(owner: str) -> NoteSnapshot:
    now = datetime.now(UTC)
    return NoteSnapshot(
        id=uuid4(),
        owner_id=owner,
        title="t",
        body="b",
        tags=[],
        version=1,
        created_at=now,
        updated_at=now,
        archived_at=None,
    )


async def test_example_job_freezes_retries_and_dead_letters(harness: Harness) -> None:
    store = FakeStore()
    mine, theirs, late = snapshot("alice"), snapshot("bob"), snapshot("alice")
    store.notes[(mine.id, 1)] = mine
    store.notes[(theirs.id, 1)] = theirs
    worker = harness.worker(example_job.router, dependencies={"store": store})
    async with harness.running(worker):
        for note in (mine, theirs, late):
            request = ArchiveRequested(
                producer="docs", owner_id="alice", job_id=uuid4(), note_id=note.id, version=1
            )
            await enqueue(harness.redis, harness.keys, request, Priority.CRITICAL)
        await eventually(lambda: store.frozen == [mine])
        letters = await eventually(
            lambda: list_dead_letters(harness.redis, harness.keys, "jobs.archive.critical")
        )
        store.notes[(late.id, 1)] = late  # the note event arrives; the retry succeeds
        await eventually(lambda: len(store.frozen) == 2, within=15)
    assert letters[0].meta["error_message"] == "owner mismatch"
