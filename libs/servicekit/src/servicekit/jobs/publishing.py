"""Putting work on streams: publish an event, enqueue a job at a priority."""

from __future__ import annotations

from contracts import Event, JobRequest, Priority, job_stream
from servicekit.jobs._codec import encode_event
from servicekit.keys import StreamKeys
from servicekit.redis_client import RedisClient

__all__ = ["enqueue", "publish"]


async def publish(redis: RedisClient, keys: StreamKeys, stream: str, event: Event) -> str:
    """Append ``event`` to the contracts stream ``stream``; return the entry id.

    The current trace context goes into the headers, so the consumer's span joins this trace.
    """
    entry_id = await redis.xadd(keys.stream(stream), encode_event(event))  # type: ignore[arg-type]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def enqueue(
    redis: RedisClient, keys: StreamKeys, request: JobRequest, priority: Priority = Priority.DEFAULT
) -> str:
    """Enqueue a job request on its type's stream for ``priority``; return the entry id."""
    return await publish(redis, keys, job_stream(request.JOB_TYPE, priority), request)
