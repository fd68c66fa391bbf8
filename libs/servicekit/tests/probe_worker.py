"""A worker process for test_asyncapi.py: consumes one event, then fetches its /asyncapi.json.

Prints one JSON line: whether FastStream was loaded while the worker started and consumed (it must
not be), the document its ops port served, and whether FastStream was loaded after that request.
Configured by REDIS_URL, STREAM_PREFIX and OPS_PORT. Run as ``python probe_worker.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, Literal

from contracts import Event
from servicekit import ServiceSettings, StreamKeys, create_redis, run_worker, setup_telemetry
from servicekit.jobs import JobRouter, publish

STREAM = "test.pinged.v1"


class Pinged(Event):
    type: Literal["test.pinged.v1"] = "test.pinged.v1"


router = JobRouter(group="probe")
handled = asyncio.Event()


@router.event(Pinged, stream=STREAM, block_ms=50)
async def note_ping(event: Pinged) -> None:
    handled.set()


async def http_get(port: int, path: str) -> tuple[str, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = (await reader.read()).partition(b"\r\n\r\n")
    writer.close()
    return head.split(b" ")[1].decode(), body


async def main() -> None:
    settings = ServiceSettings(otel_service_name="probe")
    stop = asyncio.Event()
    report: dict[str, Any] = {}

    async def probe(halt: asyncio.Event) -> None:
        redis = create_redis(settings)
        await publish(redis, StreamKeys(settings.stream_prefix), STREAM, Pinged(producer="t"))
        await redis.aclose()
        await asyncio.wait_for(handled.wait(), 30)
        report["loaded_while_consuming"] = "faststream" in sys.modules
        report["status"], body = await http_get(settings.ops_port, "/asyncapi.json")
        report["document"] = json.loads(body)
        report["loaded_after_request"] = "faststream" in sys.modules
        stop.set()

    report["exit_code"] = await run_worker(
        settings,
        stop,
        routes=router.routes,
        redis=create_redis(settings),
        telemetry=setup_telemetry(settings),
        background=[probe],
    )
    print(json.dumps(report))


if __name__ == "__main__":
    asyncio.run(main())
