"""The checker's judging on histories and effects built by hand (no servers): each rule can fail."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from contracts import bulk_child_job_id, copy_note_id

from .checker import (
    COPY_TITLE,
    NOTE_TITLE,
    Effects,
    History,
    StoredJob,
    StoredNote,
    StoredSnapshot,
    Verdict,
    judge,
    judge_fanout,
    judge_ticks,
    token_of,
)


def told_note(history: History, token: str) -> UUID:
    note_id = uuid4()
    history.note_created(token, note_id)
    return note_id


def stored(note_id: UUID, token: str, *, archived: bool = False) -> StoredNote:
    return StoredNote(note_id, NOTE_TITLE.format(token=token), archived)


def healthy_run() -> tuple[History, Effects]:
    """One note created, archived and copied; every effect where it belongs."""
    history, effects = History(), Effects()
    note = told_note(history, "n1")
    archive, copy = uuid4(), uuid4()
    history.asked_job("a1", "archive", note)
    history.job_accepted("a1", archive)
    history.asked_job("c1", "copy", note)
    history.job_accepted("c1", copy)
    copy_id = copy_note_id(copy)
    effects.notes = [
        stored(note, "n1", archived=True),
        StoredNote(copy_id, COPY_TITLE.format(token="c1"), False),
    ]
    effects.archiver_notes = {note, copy_id}
    effects.jobs = [
        StoredJob(archive, "archive", "succeeded", note),
        StoredJob(copy, "copy", "succeeded", note),
    ]
    effects.snapshots = [StoredSnapshot(note, 1, archive)]
    effects.results = Counter({archive: 1, copy: 1})
    effects.unpublished = {"notes": 0, "archiver": 0}
    return history, effects


def test_a_run_where_every_effect_happened_once_is_clean() -> None:
    verdict = judge(*healthy_run())
    assert verdict.clean, verdict.describe()
    assert verdict.effects == 3  # the note, its archive, its copy


def test_an_acknowledged_note_that_is_not_stored_is_lost() -> None:
    history, effects = healthy_run()
    told_note(history, "n2")
    verdict = judge(history, effects)
    assert [f for f in verdict.lost if "n2" in f] == [
        f"note n2: told {history.notes['n2']}, not stored"
    ]
    assert not verdict.settled


def test_a_note_that_never_reached_the_archiver_is_lost() -> None:
    history, effects = healthy_run()
    effects.archiver_notes.discard(history.notes["n1"])
    assert judge(history, effects).lost == [
        f"note n1 ({history.notes['n1']}): never reached the archiver"
    ]


def test_two_notes_for_one_idempotency_key_are_a_duplicate() -> None:
    history, effects = healthy_run()
    effects.notes.append(stored(uuid4(), "n1"))
    verdict = judge(history, effects)
    assert len(verdict.duplicated) == 1
    assert verdict.duplicated[0].startswith("note n1: 2 notes")
    assert not verdict.lost


def test_a_note_nobody_asked_for_is_unexpected() -> None:
    history, effects = healthy_run()
    stray = uuid4()
    effects.notes.append(StoredNote(stray, "hand-made", False))
    assert judge(history, effects).unexpected == [
        f"note {stray} ('hand-made'): no request explains it"
    ]


def test_an_effect_of_a_refused_request_is_unexpected_and_of_an_unanswered_one_is_not() -> None:
    history, effects = healthy_run()
    history.was_refused("n2", 500)
    history.gave_up("n3", "note")
    effects.notes += [stored(uuid4(), "n2"), stored(uuid4(), "n3")]
    verdict = judge(history, effects)
    assert len(verdict.unexpected) == 1
    assert "refused with 500" in verdict.unexpected[0]
    effects.notes.append(stored(uuid4(), "n3"))
    assert any(
        f.startswith("note n3 (no answer): 2 notes") for f in judge(history, effects).duplicated
    )


def test_an_archive_job_without_its_snapshot_or_flag_is_lost() -> None:
    history, effects = healthy_run()
    effects.snapshots = []
    assert judge(history, effects).lost == [
        f"archive a1: job {history.jobs['a1'].job_id}, no snapshot"
    ]
    history, effects = healthy_run()
    effects.notes[0] = stored(history.notes["n1"], "n1", archived=False)
    verdict = judge(history, effects)
    assert verdict.lost == [f"archive a1: note {history.notes['n1']} not marked archived"]


def test_a_job_applied_twice_is_a_duplicate() -> None:
    history, effects = healthy_run()
    effects.results[history.jobs["c1"].job_id] = 2
    [finding] = judge(history, effects).duplicated
    assert finding.startswith("copy c1: job")
    assert finding.endswith("applied 2 times (results emitted)")


def test_a_second_job_row_for_one_request_is_a_duplicate_not_unexpected() -> None:
    history, effects = healthy_run()
    note = history.notes["n1"]
    effects.jobs.append(StoredJob(uuid4(), "archive", "succeeded", note))
    verdict = judge(history, effects)
    assert verdict.duplicated == ["archive a1: 2 job rows for one request"]
    assert not verdict.unexpected


def test_a_copy_job_without_its_copy_is_lost() -> None:
    history, effects = healthy_run()
    copy_id = copy_note_id(history.jobs["c1"].job_id)
    effects.notes = [n for n in effects.notes if n.id != copy_id]
    assert judge(history, effects).lost == [
        f"copy c1: job {history.jobs['c1'].job_id}, no copy {copy_id}"
    ]


def test_an_acknowledged_job_that_is_not_succeeded_or_an_undrained_outbox_is_unfinished() -> None:
    history, effects = healthy_run()
    archive = history.jobs["a1"].job_id
    effects.jobs[0] = StoredJob(archive, "archive", "retrying", history.notes["n1"])
    effects.unpublished["notes"] = 3
    verdict = judge(history, effects)
    assert verdict.unfinished == [
        f"archive a1: job {archive} retrying",
        "notes.outbox: 3 rows never published",
    ]
    assert not verdict.settled


def test_a_job_snapshot_or_archived_flag_nobody_asked_for_is_unexpected() -> None:
    history, effects = healthy_run()
    other = told_note(history, "n2")
    stray = uuid4()
    effects.notes.append(stored(other, "n2", archived=True))
    effects.archiver_notes.add(other)
    effects.jobs.append(StoredJob(stray, "archive", "succeeded", other))
    effects.snapshots.append(StoredSnapshot(other, 1, stray))
    verdict = judge(history, effects)
    assert len(verdict.unexpected) == 3, verdict.describe()
    assert not verdict.lost
    assert not verdict.duplicated


def test_an_unanswered_job_request_may_have_one_effect() -> None:
    history, effects = healthy_run()
    other = told_note(history, "n2")
    job = uuid4()
    history.asked_job("a2", "archive", other)
    history.gave_up("a2", "archive")
    effects.notes.append(stored(other, "n2", archived=True))
    effects.archiver_notes.add(other)
    effects.jobs.append(StoredJob(job, "archive", "succeeded", other))
    effects.snapshots.append(StoredSnapshot(other, 1, job))
    assert judge(history, effects).clean


def test_the_title_names_the_request() -> None:
    assert token_of(NOTE_TITLE.format(token="w1-7")) == "w1-7"
    assert token_of(COPY_TITLE.format(token="w1-8")) == "w1-8"
    assert token_of("something else") is None


def test_history_counts_requests_and_recovery() -> None:
    history = History()
    history.attempted(503)
    history.attempted(None, "ConnectError")
    history.attempted(201)
    told_note(history, "n1")
    history.gave_up("n2", "note")
    assert (history.requests, history.acknowledged, history.attempts) == (2, 1, 3)
    assert history.statuses == Counter({503: 1, 201: 1})
    assert history.errors == Counter({"ConnectError": 1})
    assert history.recovery_after(0.0) is not None
    assert history.recovery_after(history.timeline[-1][0] + 1) is None


def test_fanout_children_are_judged_one_each() -> None:
    parent = uuid4()
    notes = [uuid4() for _ in range(3)]
    children = [bulk_child_job_id(parent, n) for n in notes]
    snapshots = [StoredSnapshot(n, 1, c) for n, c in zip(notes, children, strict=True)]
    assert judge_fanout(parent, notes, Counter(children), snapshots, Counter(children)).clean
    stray = uuid4()
    verdict = judge_fanout(
        parent,
        notes,
        Counter([*children[:2], stray]),
        [*snapshots[:2], StoredSnapshot(uuid4(), 1, stray)],
        Counter({children[0]: 2}),
    )
    assert (len(verdict.lost), len(verdict.duplicated), len(verdict.unexpected)) == (2, 1, 2)


def test_ticks_fired_twice_missed_or_unhandled_are_found() -> None:
    start = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)
    ticks = [start + timedelta(seconds=n) for n in range(5)]
    assert judge_ticks(ticks, ticks).clean
    verdict = judge_ticks([*ticks[:2], ticks[1], *ticks[3:]], ticks[:2])
    assert verdict.duplicated == [f"tick {ticks[1].isoformat()} fired 2 times"]
    assert f"tick {ticks[2].isoformat()} never fired" in verdict.lost
    assert f"tick {ticks[4].isoformat()} fired, never handled" in verdict.lost
    assert judge_ticks([], []).lost == ["no tick fired"]


def test_verdicts_merge_and_describe_with_examples() -> None:
    merged = Verdict(lost=["a"] * 7, effects=2).merge(Verdict(duplicated=["b"], effects=3))
    assert merged.effects == 5
    text = merged.describe()
    assert text.splitlines()[0] == "lost 7 duplicated 1 unexpected 0 unfinished 0"
    assert "lost: ... and 2 more" in text


def test_ticks_after_the_cutoff_are_not_judged_yet() -> None:
    start = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)
    ticks = [start + timedelta(seconds=n) for n in range(5)]
    verdict = judge_ticks(ticks, ticks[:3], until=ticks[2])
    assert verdict.clean
    assert verdict.effects == 3
