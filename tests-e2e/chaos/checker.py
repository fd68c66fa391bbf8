"""What clients were told against what the stores hold: lost, duplicated and unexpected effects.

The way Jepsen checks a queue: the workload records every request it made and what it was told
(`History`); after the run, `collect_effects` reads every effect from the real stores (notes-api's
notes and job rows, the archiver's versions, snapshots and emitted results, each outbox's backlog);
`judge` compares the two:

- **lost**: acknowledged (201 / 202), and its effect is not there (a note that is not stored or
  never reached the archiver; an archive job without its snapshot or archived flag; a copy job
  without its copy);
- **duplicated**: one request, more than one effect (two notes for one Idempotency-Key, two job
  rows for one request, a job whose result the archiver emitted twice);
- **unexpected**: an effect no client was told about (a note, job or snapshot of the workload's
  owner that no request explains, or of a request that was refused);
- **unfinished**: final states: an acknowledged job that is not `succeeded`, outbox rows never
  published.

A request the client gave up on without an answer is *indeterminate*: zero or one effect is fine
for it, two are a duplicate. Each logical request carries a token: the Idempotency-Key it is sent
(and retried) with, also written into the note's title, so an effect names its request. The
workload asks at most one archive and one copy of each note it created, so a job row is
attributed to its request by (type, note).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

import asyncpg

from contracts import bulk_child_job_id, copy_note_id

JobKind = Literal["archive", "copy"]
NOTE_TITLE = "chaos {token}"
COPY_TITLE = "copy {token}"
EXAMPLES = 5
"""How many examples of each kind of finding a report shows."""


# ---- what clients were told ---------------------------------------------------------------------


@dataclass(frozen=True)
class ToldJob:
    job_id: UUID
    kind: JobKind
    note_id: UUID


@dataclass(frozen=True)
class AskedJob:
    """A job request's target, known before any answer (for indeterminate requests)."""

    kind: JobKind
    note_id: UUID


@dataclass
class History:
    """Every logical request and what its client was finally told; safe to share between threads.

    ``attempts`` counts HTTP attempts (retries included), ``statuses`` every status they got,
    ``errors`` the network errors by class, ``timeline`` (monotonic time, status or 0 for a
    network error) each attempt's outcome, for recovery times.
    """

    notes: dict[str, UUID] = field(default_factory=dict)
    jobs: dict[str, ToldJob] = field(default_factory=dict)
    asked_jobs: dict[str, AskedJob] = field(default_factory=dict)
    indeterminate: dict[str, str] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    timeline: list[tuple[float, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def attempted(self, status: int | None, error: str | None = None) -> None:
        with self._lock:
            self.attempts += 1
            if status is None:
                self.errors[error or "error"] += 1
            else:
                self.statuses[status] += 1
            self.timeline.append((time.monotonic(), status or 0))

    def asked_job(self, token: str, kind: JobKind, note_id: UUID) -> None:
        with self._lock:
            self.asked_jobs[token] = AskedJob(kind, note_id)

    def note_created(self, token: str, note_id: UUID) -> None:
        with self._lock:
            self.notes[token] = note_id

    def job_accepted(self, token: str, job_id: UUID) -> None:
        with self._lock:
            asked = self.asked_jobs[token]
            self.jobs[token] = ToldJob(job_id, asked.kind, asked.note_id)

    def gave_up(self, token: str, kind: str) -> None:
        with self._lock:
            self.indeterminate[token] = kind

    def was_refused(self, token: str, status: int) -> None:
        with self._lock:
            self.refused[token] = status

    @property
    def requests(self) -> int:
        """Logical requests (a request and its retries count once)."""
        with self._lock:
            return len(self.notes) + len(self.jobs) + len(self.indeterminate) + len(self.refused)

    @property
    def acknowledged(self) -> int:
        with self._lock:
            return len(self.notes) + len(self.jobs)

    def recovery_after(self, moment: float) -> float | None:
        """Seconds from ``moment`` to the first success (2xx) after it; None if none yet."""
        with self._lock:
            successes = [t for t, status in self.timeline if t >= moment and 200 <= status < 300]
        return min(successes) - moment if successes else None

    def statuses_between(self, start: float, end: float) -> Counter[int]:
        """Statuses of the attempts in [start, end] (0: a network error)."""
        with self._lock:
            return Counter(status for t, status in self.timeline if start <= t <= end)


# ---- what the stores hold -----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredNote:
    id: UUID
    title: str
    archived: bool


@dataclass(frozen=True)
class StoredJob:
    id: UUID
    type: str
    status: str
    note_id: UUID | None


@dataclass(frozen=True)
class StoredSnapshot:
    note_id: UUID
    version: int
    job_id: UUID


@dataclass
class Effects:
    """Every effect of one owner's requests, as the stores hold it after the run.

    ``results``: result events the archiver emitted (outbox rows of notes.archived.v1 and
    notes.copy_completed.v1), counted by job id; each is written with its effect, so two mean
    the job ran twice. ``unpublished``: outbox rows not yet published, by schema.
    """

    notes: list[StoredNote] = field(default_factory=list)
    archiver_notes: set[UUID] = field(default_factory=set)
    jobs: list[StoredJob] = field(default_factory=list)
    snapshots: list[StoredSnapshot] = field(default_factory=list)
    results: Counter[UUID] = field(default_factory=Counter)
    unpublished: dict[str, int] = field(default_factory=dict)


# ---- the verdict --------------------------------------------------------------------------------


@dataclass
class Verdict:
    """Findings by kind, each a sentence naming the request and the effect."""

    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    effects: int = 0
    """Effects found that acknowledged requests explain."""

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.unfinished)

    @property
    def settled(self) -> bool:
        """Nothing is still missing: what remains (if anything) will not fix itself."""
        return not (self.lost or self.unfinished)

    def merge(self, other: Verdict) -> Verdict:
        return Verdict(
            self.lost + other.lost,
            self.duplicated + other.duplicated,
            self.unexpected + other.unexpected,
            self.unfinished + other.unfinished,
            self.effects + other.effects,
        )

    def figures(self) -> str:
        return (
            f"lost {len(self.lost)} duplicated {len(self.duplicated)} "
            f"unexpected {len(self.unexpected)} unfinished {len(self.unfinished)}"
        )

    def describe(self) -> str:
        """The figures and a few examples of each finding (what a failing scenario prints)."""
        lines = [self.figures()]
        for name in ("lost", "duplicated", "unexpected", "unfinished"):
            found: list[str] = getattr(self, name)
            lines += [f"  {name}: {item}" for item in found[:EXAMPLES]]
            if len(found) > EXAMPLES:
                lines.append(f"  {name}: ... and {len(found) - EXAMPLES} more")
        return "\n".join(lines)


def token_of(title: str) -> str | None:
    """The request token a workload note's title carries (created or copied), else None."""
    for template in (NOTE_TITLE, COPY_TITLE):
        prefix = template.split("{", 1)[0]
        if title.startswith(prefix):
            return title[len(prefix) :]
    return None


def judge(history: History, effects: Effects) -> Verdict:
    """Compare what clients were told with what the stores hold (see the module docstring)."""
    verdict = Verdict()
    notes_by_token: dict[str, list[StoredNote]] = {}
    copies_by_token: dict[str, list[StoredNote]] = {}
    untitled: list[StoredNote] = []
    for note in effects.notes:
        token = token_of(note.title)
        if token is None:
            untitled.append(note)
            continue
        is_copy = note.title.startswith(COPY_TITLE.split("{", 1)[0])
        (copies_by_token if is_copy else notes_by_token).setdefault(token, []).append(note)
    _judge_notes(history, effects, notes_by_token, verdict)
    explained_copies = _judge_jobs(history, effects, copies_by_token, verdict)
    unexplained = [n for n in untitled if n.id not in explained_copies]
    verdict.unexpected += [
        f"note {n.id} ({n.title!r}): no request explains it" for n in unexplained
    ]
    for schema, rows in sorted(effects.unpublished.items()):
        if rows:
            verdict.unfinished.append(f"{schema}.outbox: {rows} rows never published")
    return verdict


def _judge_notes(
    history: History,
    effects: Effects,
    by_token: dict[str, list[StoredNote]],
    verdict: Verdict,
) -> None:
    for token, note_id in history.notes.items():
        stored = by_token.get(token, [])
        ids = {n.id for n in stored}
        if note_id not in ids:
            verdict.lost.append(f"note {token}: told {note_id}, not stored")
        else:
            verdict.effects += 1
            if note_id not in effects.archiver_notes:
                verdict.lost.append(f"note {token} ({note_id}): never reached the archiver")
        if len(stored) > 1:
            verdict.duplicated.append(f"note {token}: {len(stored)} notes {sorted(map(str, ids))}")
        elif stored and note_id not in ids:
            verdict.unexpected.append(f"note {token}: stored as {stored[0].id}, told {note_id}")
    for token, stored in by_token.items():
        if token in history.notes:
            continue
        if token in history.indeterminate:
            if len(stored) > 1:
                verdict.duplicated.append(f"note {token} (no answer): {len(stored)} notes")
        elif token in history.refused:
            verdict.unexpected.append(
                f"note {token}: refused with {history.refused[token]}, yet stored as {stored[0].id}"
            )
        else:
            verdict.unexpected.append(f"note {token}: stored as {stored[0].id}, never requested")


def _judge_jobs(
    history: History,
    effects: Effects,
    copies_by_token: dict[str, list[StoredNote]],
    verdict: Verdict,
) -> set[UUID]:
    """Judge job rows, snapshots, results and copies; return the ids of explained copies."""
    rows: dict[tuple[str, UUID | None], list[StoredJob]] = {}
    for job in effects.jobs:
        rows.setdefault((job.type, job.note_id), []).append(job)
    snapshots: dict[UUID, list[StoredSnapshot]] = {}
    for snapshot in effects.snapshots:
        snapshots.setdefault(snapshot.job_id, []).append(snapshot)
    notes = {n.id: n for n in effects.notes}
    explained_rows: set[UUID] = set()
    explained_copies: set[UUID] = set()
    archived_told: set[UUID] = set()

    for token, told in history.jobs.items():
        found = rows.get((told.kind, told.note_id), [])
        explained_rows |= {j.id for j in found}
        mine = [j for j in found if j.id == told.job_id]
        if len(found) > 1:
            verdict.duplicated.append(f"{told.kind} {token}: {len(found)} job rows for one request")
        if not mine:
            verdict.lost.append(f"{told.kind} {token}: told job {told.job_id}, no job row")
            continue
        if mine[0].status != "succeeded":
            verdict.unfinished.append(f"{told.kind} {token}: job {told.job_id} {mine[0].status}")
        if effects.results[told.job_id] > 1:
            verdict.duplicated.append(
                f"{told.kind} {token}: job {told.job_id} applied "
                f"{effects.results[told.job_id]} times (results emitted)"
            )
        if told.kind == "archive":
            archived_told.add(told.note_id)
            frozen = snapshots.get(told.job_id, [])
            note = notes.get(told.note_id)
            if not frozen:
                verdict.lost.append(f"archive {token}: job {told.job_id}, no snapshot")
            elif note is None or not note.archived:
                verdict.lost.append(f"archive {token}: note {told.note_id} not marked archived")
            else:
                verdict.effects += 1
        else:
            copy_id = copy_note_id(told.job_id)
            explained_copies.add(copy_id)
            copies = copies_by_token.get(token, [])
            if copy_id not in notes:
                verdict.lost.append(f"copy {token}: job {told.job_id}, no copy {copy_id}")
            else:
                verdict.effects += 1
            if len(copies) > 1:
                verdict.duplicated.append(f"copy {token}: {len(copies)} copies")

    # Requests without an answer: at most one row each; their effects are explained.
    for token, asked in history.asked_jobs.items():
        if token in history.jobs:
            continue
        found = rows.get((asked.kind, asked.note_id), [])
        if token in history.refused and found:
            verdict.unexpected.append(
                f"{asked.kind} {token}: refused with {history.refused[token]}, yet job "
                f"{found[0].id} exists"
            )
            continue
        if len(found) > 1:
            verdict.duplicated.append(f"{asked.kind} {token} (no answer): {len(found)} job rows")
        explained_rows |= {j.id for j in found}
        for job in found:
            if asked.kind == "archive":
                archived_told.add(asked.note_id)
            else:
                explained_copies.add(copy_note_id(job.id))

    verdict.unexpected += [
        f"job {j.id} ({j.type} of note {j.note_id}): no request explains it"
        for j in effects.jobs
        if j.id not in explained_rows
    ]
    verdict.unexpected += [
        f"snapshot of note {s.note_id} v{s.version} by job {s.job_id}: no archive job explains it"
        for s in effects.snapshots
        if s.job_id not in explained_rows
    ]
    verdict.unexpected += [
        f"note {n.id} archived: no archive request for it"
        for n in effects.notes
        if n.archived and n.id not in archived_told
    ]
    return explained_copies


# ---- fanout and ticks: judged the same way ------------------------------------------------------


def judge_fanout(
    parent: UUID,
    note_ids: Iterable[UUID],
    published: Counter[UUID],
    snapshots: Iterable[StoredSnapshot],
    results: Counter[UUID],
) -> Verdict:
    """A bulk archive's children: one published child, one snapshot, one result per note.

    ``published``: child job ids on the archive stream (a re-sent child has the same id, so it
    counts once); ``snapshots``: the owner's; ``results``: result events per job id.
    """
    verdict = Verdict()
    expected = {bulk_child_job_id(parent, note_id): note_id for note_id in note_ids}
    frozen = {s.job_id: s for s in snapshots}
    for child, note_id in expected.items():
        if child not in published:
            verdict.lost.append(f"child {child} of note {note_id}: never published")
        if child not in frozen:
            verdict.lost.append(f"child {child} of note {note_id}: no snapshot")
        else:
            verdict.effects += 1
        if results[child] > 1:
            verdict.duplicated.append(f"child {child}: applied {results[child]} times")
    verdict.unexpected += [
        f"child {c}: published, not asked" for c in published if c not in expected
    ]
    verdict.unexpected += [
        f"snapshot of note {s.note_id} by job {s.job_id}: not a child of {parent}"
        for s in frozen.values()
        if s.job_id not in expected
    ]
    return verdict


def judge_ticks(
    fired: Iterable[datetime],
    handled: Iterable[datetime],
    *,
    until: datetime | None = None,
    every: timedelta = timedelta(seconds=1),
) -> Verdict:
    """A schedule's commands: every tick from the first to the last fired once and was handled.

    ``fired``: tick times of the commands on the stream (a repeat is a duplicate, a gap is lost);
    ``handled``: tick times of the executor's completions; ``until``: ticks after it are not
    judged (they keep coming while the check waits).
    """
    verdict = Verdict()
    ticks = [t for t in fired if until is None or t <= until]
    if not ticks:
        verdict.lost.append("no tick fired")
        return verdict
    counts = Counter(ticks)
    verdict.duplicated += [
        f"tick {t.isoformat()} fired {n} times" for t, n in counts.items() if n > 1
    ]
    first, last = min(ticks), max(ticks)
    expected = [first + every * n for n in range(int((last - first) / every) + 1)]
    verdict.lost += [f"tick {t.isoformat()} never fired" for t in expected if t not in counts]
    done = set(handled)
    verdict.lost += [f"tick {t.isoformat()} fired, never handled" for t in counts if t not in done]
    verdict.effects = len(done & set(counts))
    return verdict


# ---- reading the stores -------------------------------------------------------------------------

_RESULT_TYPES = ["notes.archived.v1", "notes.copy_completed.v1"]
OUTBOX_SCHEMAS = ("notes", "archiver", "fanout")


async def _collect(database_url: str, owner: str) -> Effects:
    connection = await asyncpg.connect(database_url)
    try:
        notes = await connection.fetch(
            "SELECT id, title, archived_at IS NOT NULL AS archived FROM notes.notes"
            " WHERE owner_id = $1",
            owner,
        )
        versions = await connection.fetch(
            "SELECT DISTINCT note_id FROM archiver.note_versions WHERE owner_id = $1", owner
        )
        jobs = await connection.fetch(
            "SELECT id, type, status, note_id FROM notes.jobs WHERE owner_id = $1", owner
        )
        snapshots = await connection.fetch(
            "SELECT note_id, version, job_id FROM archiver.snapshots WHERE owner_id = $1", owner
        )
        results = await connection.fetch(
            "SELECT (payload->>'job_id')::uuid AS job_id, count(*) AS n FROM archiver.outbox"
            " WHERE event_type = ANY($1::text[]) AND payload->>'owner_id' = $2 GROUP BY 1",
            _RESULT_TYPES,
            owner,
        )
        unpublished = {
            schema: int(
                await connection.fetchval(
                    f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL"
                )
            )
            for schema in OUTBOX_SCHEMAS
        }
    finally:
        await connection.close()
    return Effects(
        notes=[StoredNote(r["id"], r["title"], r["archived"]) for r in notes],
        archiver_notes={r["note_id"] for r in versions},
        jobs=[StoredJob(r["id"], r["type"], r["status"], r["note_id"]) for r in jobs],
        snapshots=[StoredSnapshot(r["note_id"], r["version"], r["job_id"]) for r in snapshots],
        results=Counter({r["job_id"]: int(r["n"]) for r in results}),
        unpublished=unpublished,
    )


def collect_effects(database_url: str, owner: str) -> Effects:
    """Every effect of ``owner``'s requests in notes-api's, the archiver's and fanout's schemas."""
    return asyncio.run(_collect(database_url, owner))


def settle(
    check: Callable[[], Verdict], within: float, every: float = 1.0
) -> tuple[Verdict, float]:
    """Re-check until nothing is missing any more, or ``within`` seconds have passed.

    Returns the last verdict and how long it took to settle. Duplicates and unexpected effects
    do not go away by waiting, so only lost and unfinished ones are waited for; the caller
    asserts the verdict is clean and prints it (what was awaited and what was seen) if not.
    """
    start = time.monotonic()
    while True:
        verdict = check()
        waited = time.monotonic() - start
        if verdict.settled or waited > within:
            return verdict, waited
        time.sleep(every)
