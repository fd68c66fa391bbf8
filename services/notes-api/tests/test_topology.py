"""notes-api-worker's routes are exactly the groups contracts declares for it."""

from contracts import Service
from notes_api.worker.handlers import router
from servicekit.testing import assert_routes_declared


def test_worker_routes_match_the_declared_topology() -> None:
    assert_routes_declared(router, Service.NOTES_API_WORKER)


def test_the_http_process_consumes_nothing() -> None:
    assert_routes_declared([], Service.NOTES_API)
