# The job from docs/async-jobs.md ("Declaring a job"); test_docs_example.py runs it and checks
# that the document still shows exactly this code.
from typing import Protocol

from contracts import ArchiveRequested, NoteSnapshot
from servicekit import PermanentError, TransientError
from servicekit.jobs import JobRouter

router = JobRouter(group="archiver")


class SnapshotStore(Protocol):
    async def version(self, note_id: object, version: int) -> NoteSnapshot | None: ...
    async def freeze(self, note: NoteSnapshot) -> None: ...


@router.job(ArchiveRequested, max_attempts=5, timeout=30)
async def archive_note(request: ArchiveRequested, store: SnapshotStore) -> None:
    """Freeze the requested version of a note (a no-op when it is already frozen)."""
    note = await store.version(request.note_id, request.version)
    if note is None:
        raise TransientError("version not received yet")  # retried with backoff
    if note.owner_id != request.owner_id:
        raise PermanentError("owner mismatch")  # dead-lettered on the first delivery
    await store.freeze(note)
