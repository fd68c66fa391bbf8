"""A bench consumer process: ``python -m bench.worker --prefix P --consumer C [--mode latency]``.

Protocol with the parent (one line each): the process prints ``READY`` once set up (imports,
telemetry, Redis connection, a warm decode), starts consuming on ``GO``, stops on ``STOP`` (or EOF)
and prints ``RESULT {json}``. Logs go to stderr. ``--profile FILE`` profiles GO..STOP with cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import sys
import time

from redis.asyncio import Redis

from bench.common import GROUP, REDIS_URL, STREAM, Pinged, make_pinged
from servicekit import ServiceSettings, StreamKeys, setup_telemetry
from servicekit.jobs import JobOptions, JobRouter, Worker
from servicekit.jobs._codec import decode_entry, encode_event
from servicekit.lifecycle import event_loop_factory


async def _lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


class RawLatencyLoop:
    """The latency baseline: XREADGROUP BLOCK, decode, record, one XACK per batch."""

    def __init__(self, redis: Redis, key: str, consumer: str, block_ms: int) -> None:
        self.redis, self.key, self.consumer, self.block_ms = redis, key, consumer, block_ms
        self.samples: list[tuple[float, float]] = []

    async def run(self, stop: asyncio.Event) -> int:
        while not stop.is_set():
            reply = await self.redis.xreadgroup(
                GROUP, self.consumer, {self.key: ">"}, count=100, block=self.block_ms
            )
            if not reply:
                continue
            ids = []
            for entry_id, fields in reply[0][1]:
                sent_at = json.loads(fields[b"__data__"])["body"]["sent_at"]
                self.samples.append((sent_at, time.time()))
                ids.append(entry_id)
            await self.redis.xack(self.key, GROUP, *ids)
        return 0


async def main(args: argparse.Namespace) -> int:
    settings = ServiceSettings(
        otel_service_name="bench-worker",
        redis_url=REDIS_URL,
        stream_prefix=args.prefix,
        consumer_name=args.consumer,
    )
    telemetry = setup_telemetry(settings, log_stream=sys.stderr)
    redis = Redis.from_url(REDIS_URL)
    samples: list[tuple[float, float]] = []
    handled = 0
    router = JobRouter(group=GROUP, defaults=JobOptions(block_ms=args.block_ms))

    if args.mode == "latency":

        @router.event(Pinged, stream=STREAM)
        async def record(event: Pinged) -> None:
            nonlocal handled
            handled += 1
            samples.append((event.sent_at, time.time()))

    else:

        @router.event(Pinged, stream=STREAM)
        async def noop(event: Pinged) -> None:
            nonlocal handled
            handled += 1

    worker = Worker(
        router.routes,
        redis=redis,
        keys=StreamKeys(args.prefix),
        consumer=args.consumer,
        telemetry=telemetry,
    )
    await worker.ensure_groups()
    runner: Worker | RawLatencyLoop = worker
    if args.mode == "raw-latency":
        runner = RawLatencyLoop(
            redis, StreamKeys(args.prefix).stream(STREAM), args.consumer, args.block_ms
        )
        samples = runner.samples
    await redis.ping()
    sample = {k.encode(): v for k, v in encode_event(make_pinged()).items()}
    decode_entry(sample, Pinged)  # warm pydantic
    reader = await _lines()
    print("READY", flush=True)
    if (await reader.readline()).strip() != b"GO":
        return 2
    profiler = cProfile.Profile() if args.profile else None
    stop = asyncio.Event()
    if profiler:
        profiler.enable()
    started = time.perf_counter()
    cpu_started = time.process_time()
    run = asyncio.create_task(runner.run(stop))
    await reader.readline()  # STOP or EOF
    stop.set()
    code = await run
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    succeeded = telemetry.registry.get_sample_value(
        "job_processed_total",
        {
            "service": "bench-worker",
            "stream": STREAM,
            "group": GROUP,
            "job_type": Pinged.type_name(),
            "status": "succeeded",
        },
    )
    result = {
        "consumer": args.consumer,
        "exit_code": code,
        "handled": handled or len(samples),
        "succeeded_metric": succeeded or 0,
        "elapsed": elapsed,
        "cpu_seconds": cpu,
        "samples": samples,
    }
    print("RESULT " + json.dumps(result), flush=True)
    await redis.aclose()
    telemetry.shutdown()
    return code


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--consumer", required=True)
    parser.add_argument("--mode", choices=("drain", "latency", "raw-latency"), default="drain")
    parser.add_argument("--block-ms", type=int, default=100)
    parser.add_argument("--profile", default="")
    return parser.parse_args(argv)


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        sys.exit(runner.run(main(parse())))
