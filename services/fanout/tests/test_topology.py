"""fanout's routes are exactly the groups contracts declares for it."""

from contracts import Service
from fanout.handlers import routes
from servicekit.testing import assert_routes_declared


def test_routes_match_the_declared_topology() -> None:
    assert_routes_declared(routes, Service.FANOUT)


def test_each_note_event_handler_reads_in_a_group_of_its_own() -> None:
    groups = {route.name: route.group for route in routes}
    assert groups == {
        "expand_bulk_archive_chunk": "fanout",
        "record_note_change": "fanout.audit",
        "count_owner_activity": "fanout.activity",
    }
