"""Declaring what a service consumes: one route per handler.

```python
router = JobRouter(group="archiver")

@router.job(ArchiveRequested, max_attempts=5)
async def archive_note(request: ArchiveRequested, store: ArchiveStore) -> None: ...
```

A job route reads the job type's three priority streams with weights 6 : 3 : 1; an event route
reads one stream. Handlers take the typed event first, then their dependencies by name.

Where throughput needs it, ``batch=N`` makes a batch route: its handler takes a list of up to N
events (whatever is ready, never waiting for more) as one unit of work:

```python
@router.event(NoteCreated, stream=NOTES_CREATED, batch=50)
async def store_note_versions(changes: list[NoteCreated], store: ArchiveStore) -> None: ...
```
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from contracts import PRIORITY_WEIGHTS, Event, JobRequest, Priority, job_streams
from servicekit.jobs.options import JobOptions

__all__ = ["Handler", "JobRouter", "Route", "WeightedStream"]

E = TypeVar("E", bound=Event)
Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class WeightedStream:
    """A contracts stream name and its share of reads when every stream is busy."""

    name: str
    weight: int = 1


@dataclass(frozen=True)
class Route:
    """One handler bound to the streams it reads, its consumer group and options."""

    handler: Handler
    event_type: type[Event]
    streams: tuple[WeightedStream, ...]
    group: str
    options: JobOptions = field(default_factory=JobOptions)

    also_accepts: tuple[type[Event], ...] = ()
    """Further event classes on the same streams (a stream that carries a union)."""

    batch: int | None = None
    """Most events a batch handler receives in one call; ``None`` for a handler of one event."""

    @property
    def accepted(self) -> dict[str, type[Event]]:
        """Event classes this route decodes, by versioned type name."""
        return {cls.type_name(): cls for cls in (self.event_type, *self.also_accepts)}

    @property
    def name(self) -> str:
        """The handler's name, used in logs and metrics."""
        return getattr(self.handler, "__name__", repr(self.handler))

    @property
    def job_type(self) -> str:
        """The job type label (the event type for plain event routes)."""
        if issubclass(self.event_type, JobRequest) and hasattr(self.event_type, "JOB_TYPE"):
            return str(self.event_type.JOB_TYPE.value)
        if self.also_accepts:
            return self.streams[0].name
        return self.event_type.type_name()

    @property
    def carries_jobs(self) -> bool:
        """Whether messages carry a job id (and so get lifecycle events)."""
        return issubclass(self.event_type, JobRequest)


class JobRouter:
    """Collects routes for one consumer group; the service's worker runs them."""

    def __init__(self, *, group: str, defaults: JobOptions | None = None) -> None:
        self.group = group
        self.defaults = defaults or JobOptions()
        self.routes: list[Route] = []

    def job(
        self, request_type: type[E], *, batch: int | None = None, **options: Any
    ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        """Register a handler for a job type's critical, default and low streams.

        With ``batch=N`` the handler receives a list of up to N requests in one call.
        """
        job_type = request_type.JOB_TYPE  # type: ignore[attr-defined]
        priorities = (Priority.CRITICAL, Priority.DEFAULT, Priority.LOW)
        streams = tuple(
            WeightedStream(name, PRIORITY_WEIGHTS[priority])
            for name, priority in zip(job_streams(job_type), priorities, strict=True)
        )
        return self._register(request_type, streams, options, batch=batch)

    def event(
        self,
        event_type: type[E] | Sequence[type[Event]],
        *,
        stream: str | Sequence[str],
        batch: int | None = None,
        **options: Any,
    ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        """Register a handler for one event stream (or several with equal weight).

        ``event_type`` may be several classes when one stream carries a union (the job
        lifecycle stream); the handler then receives whichever class the entry declares.
        With ``batch=N`` the handler receives a list of up to N events in one call.
        """
        names = (stream,) if isinstance(stream, str) else tuple(stream)
        streams = tuple(WeightedStream(n) for n in names)
        if isinstance(event_type, type):
            return self._register(event_type, streams, options, batch=batch)
        first, *rest = event_type
        return self._register(first, streams, options, tuple(rest), batch=batch)

    def _register(
        self,
        event_type: type[Event],
        streams: tuple[WeightedStream, ...],
        options: dict[str, Any],
        also_accepts: tuple[type[Event], ...] = (),
        *,
        batch: int | None = None,
    ) -> Callable[[Handler], Handler]:
        if batch is not None and batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")

        def decorator(handler: Handler) -> Handler:
            self.routes.append(
                Route(
                    handler=handler,
                    event_type=event_type,
                    streams=streams,
                    group=self.group,
                    options=replace(self.defaults, **options),
                    also_accepts=also_accepts,
                    batch=batch,
                )
            )
            return handler

        return decorator
