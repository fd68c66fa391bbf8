"""ConnectionGuard decisions on fake connections (pure logic; sockets: test_server_limits)."""

from dataclasses import dataclass, field
from typing import Any, cast

from notes_api.server import ConnectionGuard, ConnectionLimits, GuardedProtocol

LIMITS = ConnectionLimits(
    receive_timeout=10.0, write_timeout=30.0, max_header_bytes=16384, max_connections=2
)


@dataclass
class FakeTransport:
    pending: int = 0
    aborted: bool = False

    def get_write_buffer_size(self) -> int:
        return self.pending

    def abort(self) -> None:
        self.aborted = True


@dataclass(eq=False)  # hashed by identity, like a protocol
class FakeConnection:
    receiving_since: float | None = None
    write_stalled_since: float | None = None
    write_mark: int = 0
    transport: FakeTransport = field(default_factory=FakeTransport)
    sheddable: bool = True
    timed_out: bool = False
    loop: Any = None

    def is_sheddable(self) -> bool:
        return self.sheddable

    def receive_timed_out(self) -> None:
        self.timed_out = True


def guard_with(*connections: FakeConnection) -> ConnectionGuard:
    guard = ConnectionGuard(LIMITS, registry=None)
    guard._connections = {cast(GuardedProtocol, c): None for c in connections}
    return guard


def test_a_slow_reader_that_keeps_draining_is_not_dropped() -> None:
    slow = FakeConnection(write_stalled_since=0.0, write_mark=1000)
    slow.transport.pending = 1000
    guard = guard_with(slow)
    for second in range(1, 100):
        slow.transport.pending -= 10  # reads a little every second
        guard.sweep(float(second))
    assert not slow.transport.aborted
    assert len(guard) == 1


def test_a_reader_that_stops_is_dropped_after_the_write_deadline() -> None:
    stuck = FakeConnection(write_stalled_since=0.0, write_mark=1000)
    stuck.transport.pending = 1000
    guard = guard_with(stuck)
    guard.sweep(29.0)
    assert not stuck.transport.aborted
    guard.sweep(31.0)
    assert stuck.transport.aborted
    assert len(guard) == 0


def test_a_request_still_arriving_after_the_receive_deadline_times_out() -> None:
    fresh, late = FakeConnection(receiving_since=5.0), FakeConnection(receiving_since=0.0)
    guard = guard_with(fresh, late)
    guard.sweep(11.0)
    assert (fresh.timed_out, late.timed_out) == (False, True)


def test_at_the_cap_the_oldest_sheddable_connection_makes_room() -> None:
    busy, idle = FakeConnection(sheddable=False), FakeConnection()
    guard = guard_with(busy, idle)
    guard._sweep = cast(Any, object())  # no event loop here: pretend a sweep is scheduled
    assert guard.admit(cast(GuardedProtocol, FakeConnection()))
    assert (busy.transport.aborted, idle.transport.aborted) == (False, True)
    assert len(guard) == 2


def test_at_the_cap_with_every_connection_busy_the_new_one_is_refused() -> None:
    guard = guard_with(FakeConnection(sheddable=False), FakeConnection(sheddable=False))
    assert not guard.admit(cast(GuardedProtocol, FakeConnection()))
