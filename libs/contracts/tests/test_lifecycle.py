"""Lifecycle events: one stream, told apart by type, each implying a status."""

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from contracts import (
    JOB_LIFECYCLE_ADAPTER,
    JobCompleted,
    JobDeadLettered,
    JobFailed,
    JobProgress,
    JobRetrying,
    JobSkipped,
    JobStarted,
    JobStatus,
    JobSucceeded,
)

COMMON: dict[str, Any] = {"producer": "archiver", "job_id": str(uuid4()), "job_type": "archive"}
ATTEMPT: dict[str, Any] = COMMON | {"attempt": 1, "stream": "jobs.archive.default"}
ERROR: dict[str, Any] = {"error_class": "TimeoutError", "error_message": "slow"}
COUNTS: dict[str, Any] = {"total": 3, "succeeded": 1, "failed": 1, "skipped": 1}
LATER = datetime(2030, 1, 1, tzinfo=UTC).isoformat()

CASES: list[tuple[dict[str, Any], type, JobStatus]] = [
    (ATTEMPT | {"type": "jobs.lifecycle.started.v1"}, JobStarted, JobStatus.RUNNING),
    (
        ATTEMPT | ERROR | {"type": "jobs.lifecycle.retrying.v1", "next_attempt_at": LATER},
        JobRetrying,
        JobStatus.RETRYING,
    ),
    (ATTEMPT | {"type": "jobs.lifecycle.succeeded.v1"}, JobSucceeded, JobStatus.SUCCEEDED),
    (ATTEMPT | ERROR | {"type": "jobs.lifecycle.failed.v1"}, JobFailed, JobStatus.FAILED),
    (
        ATTEMPT
        | ERROR
        | {
            "type": "jobs.lifecycle.dead_lettered.v1",
            "attempts": 5,
            "dead_letter_stream": "jobs.archive.default.dlq",
            "dead_letter_id": "1-0",
        },
        JobDeadLettered,
        JobStatus.DEAD,
    ),
    (
        ATTEMPT | {"type": "jobs.lifecycle.skipped.v1", "reason": "note deleted"},
        JobSkipped,
        JobStatus.SKIPPED,
    ),
    (COMMON | COUNTS | {"type": "jobs.lifecycle.progress.v1"}, JobProgress, JobStatus.RUNNING),
    (
        COMMON | COUNTS | {"type": "jobs.lifecycle.completed.v1", "status": "failed"},
        JobCompleted,
        JobStatus.FAILED,
    ),
]


@pytest.mark.parametrize(("payload", "kind", "status"), CASES)
def test_union_parses_each_kind_by_type(
    payload: dict[str, Any], kind: type, status: JobStatus
) -> None:
    event = JOB_LIFECYCLE_ADAPTER.validate_python(payload)
    assert type(event) is kind
    assert event.implied_status() is status
    assert JOB_LIFECYCLE_ADAPTER.validate_json(event.model_dump_json()) == event


def test_union_rejects_an_unknown_type() -> None:
    with pytest.raises(ValidationError):
        JOB_LIFECYCLE_ADAPTER.validate_python(ATTEMPT | {"type": "jobs.lifecycle.paused.v1"})


def test_completed_parent_must_have_a_terminal_status() -> None:
    with pytest.raises(ValidationError):
        JobCompleted.model_validate(COMMON | COUNTS | {"status": "running"})


def test_progress_cannot_count_more_children_than_the_total() -> None:
    with pytest.raises(ValidationError):
        JobProgress.model_validate(COMMON | COUNTS | {"total": 2})
