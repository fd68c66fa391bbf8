"""The scheduler's routes are exactly the groups contracts declares for it."""

from contracts import Service
from scheduler.handlers import router
from servicekit.testing import assert_routes_declared


def test_routes_match_the_declared_topology() -> None:
    assert_routes_declared(router, Service.SCHEDULER)
