"""Writing notes-api's events to its outbox, in the caller's transaction."""

from uuid import UUID

from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncConnection

from contracts import Event, Service
from notes_api.settings import SCHEMA
from servicekit import add_to_outbox

PRODUCER = str(Service.NOTES_API)


async def emit(
    connection: AsyncConnection, event: Event, *, stream: str, aggregate_id: UUID
) -> None:
    """Add ``event`` to the outbox in ``connection``'s transaction (published after commit)."""
    await add_to_outbox(connection, SCHEMA, event, stream=stream, aggregate_id=str(aggregate_id))


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
