"""assert_routes_declared holds a service's routes to the groups contracts declares for it."""

from dataclasses import replace

import pytest

from contracts import (
    COMMANDS_COMPLETED,
    JOBS_DELAYED,
    NOTES_CREATED,
    CommandCompleted,
    DelayedJobCancelled,
    DelayedJobRequested,
    NoteCreated,
    Service,
)
from servicekit.jobs import JobRouter
from servicekit.testing import assert_routes_declared


def _scheduler_router(handler_name: str = "hold_delayed_job") -> JobRouter:
    router = JobRouter(group=str(Service.SCHEDULER))

    async def handler(event: DelayedJobRequested) -> None: ...

    async def record_command_completed(event: CommandCompleted) -> None: ...

    handler.__name__ = handler_name
    router.event([DelayedJobRequested, DelayedJobCancelled], stream=JOBS_DELAYED)(handler)
    router.event(CommandCompleted, stream=COMMANDS_COMPLETED)(record_command_completed)
    return router


def test_routes_that_match_the_declaration_pass() -> None:
    assert_routes_declared(_scheduler_router(), Service.SCHEDULER)
    assert_routes_declared(_scheduler_router().routes, "scheduler")


def test_a_route_contracts_does_not_declare_fails() -> None:
    router = _scheduler_router()

    @router.event(NoteCreated, stream=NOTES_CREATED)
    async def index_note(event: NoteCreated) -> None: ...

    with pytest.raises(AssertionError, match=r"route not declared.*notes\.created\.v1"):
        assert_routes_declared(router, Service.SCHEDULER)


def test_a_declared_group_that_no_route_serves_fails() -> None:
    with pytest.raises(AssertionError, match=r"no route serves it.*jobs\.delayed\.v1"):
        assert_routes_declared(JobRouter(group="scheduler"), Service.SCHEDULER)


def test_a_handler_under_another_name_or_group_fails() -> None:
    with pytest.raises(AssertionError, match="hold_later"):
        assert_routes_declared(_scheduler_router("hold_later"), Service.SCHEDULER)
    other_group = [replace(route, group="scheduler-2") for route in _scheduler_router().routes]
    with pytest.raises(AssertionError, match="scheduler-2"):
        assert_routes_declared(other_group, Service.SCHEDULER)
