"""Issue 18: does throughput grow on a Redis Cluster? One node vs 3 masters, 1 and 2 processes.

The archiver's shape without its database: ``BENCH_CLUSTER_STREAMS`` (8) job streams
(``jobs.<type>.default`` for made-up job types, so each stream is a family of its own and lands on
its own hash slot), filled with ``BENCH_CLUSTER_MESSAGES`` (20,000) entries spread evenly, then
drained by worker processes running the job runtime (``servicekit.jobs.Worker``, one route per
stream, a no-op handler), with every guarantee on (acks batched with lifecycle entries, retries
armed). The same run measures four drains, in rounds (``BENCH_CLUSTER_ROUNDS``, 3):

- single node, 1 process and 2 processes: a private ``redis-server`` (the cluster's binary, same
  settings), so both sides have the same server and nothing else on it;
- 3-master cluster (``servicekit.local_cluster``), 1 process and 2 processes.

Throughput is entries over the wall time from GO to the last group drained (every entry read,
none pending); CPU is the workers' process time per entry. The ratios cluster/single (same
processes) and 2/1 (same topology) are what the scenario reports: on a shared 2-core machine the
absolute figures are noise, the ratios measured side by side are not. ``BENCH_CLUSTER=0`` skips.

A worker process: ``python -m bench.cluster_scaleout --worker --url U --prefix P --consumer C``
(READY / GO / STOP / ``RESULT {json}`` on its pipes, as bench.worker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import env_int, make_pinged, median
from bench.report import Row, Target
from servicekit import ServiceSettings, StreamKeys, setup_telemetry
from servicekit.connections import redis_client_from_url
from servicekit.jobs import JobOptions, JobRouter, Worker
from servicekit.jobs._codec import encode_event
from servicekit.lifecycle import event_loop_factory
from servicekit.local_cluster import LocalCluster, cluster_binaries
from servicekit.redis_client import RedisClient
from servicekit.testing import free_port

Say = Callable[[str], None]
GROUP = "bench.scaleout"
LOG_DIR = Path(".bench/logs")


def enabled() -> bool:
    return os.environ.get("BENCH_CLUSTER", "1") != "0"


def stream_names(count: int) -> list[str]:
    """``count`` job streams of made-up types: each its own family, so its own hash slot."""
    return [f"jobs.scale{i}.default" for i in range(count)]


# ---- the worker process --------------------------------------------------------------------


async def _worker_main(args: argparse.Namespace) -> int:
    from bench.common import Pinged

    settings = ServiceSettings(
        otel_service_name="bench-scaleout", redis_url=args.url, stream_prefix=args.prefix
    )
    telemetry = setup_telemetry(settings, log_stream=sys.stderr)
    redis = redis_client_from_url(args.url)
    handled = 0
    router = JobRouter(group=GROUP, defaults=JobOptions(block_ms=100))

    async def noop(event: Pinged) -> None:
        nonlocal handled
        handled += 1

    for name in stream_names(args.streams):
        router.event(Pinged, stream=name)(noop)
    worker = Worker(
        router.routes,
        redis=redis,
        keys=StreamKeys(args.prefix),
        consumer=args.consumer,
        telemetry=telemetry,
    )
    await worker.ensure_groups()
    await redis.ping()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("READY", flush=True)
    if (await reader.readline()).strip() != b"GO":
        return 2
    stop = asyncio.Event()
    cpu_started = time.process_time()
    run = asyncio.create_task(worker.run(stop))
    await reader.readline()  # STOP or EOF
    stop.set()
    code = await run
    cpu = time.process_time() - cpu_started
    print(
        "RESULT " + json.dumps({"handled": handled, "cpu_seconds": cpu, "exit": code}), flush=True
    )
    await redis.aclose()
    telemetry.shutdown()
    return int(code or 0)


# ---- the parent ------------------------------------------------------------------------------


@dataclass
class Drain:
    topology: str
    processes: int
    rate: float
    cpu_us_per_entry: float
    handled: int


@contextlib.contextmanager
def _single_node() -> Any:
    """A private ``redis-server`` on a free port (same binary and settings as the cluster's)."""
    server, cli = cluster_binaries()
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="bench-single-"))
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(home), "--save", "",
         "--appendonly", "no", "--logfile", "server.log"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            ping = subprocess.run(
                [cli, "-p", str(port), "PING"], capture_output=True, check=False, timeout=5
            )
            if ping.stdout.strip() == b"PONG":
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"single-node redis-server on {port} did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait(timeout=10)
        subprocess.run(["rm", "-rf", str(home)], check=False)


async def _fill(redis: RedisClient, keys: StreamKeys, streams: list[str], n: int) -> None:
    fields = encode_event(make_pinged())
    keys_of = [keys.stream(s) for s in streams]
    for start in range(0, n, 1000):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + 1000)):
                pipe.xadd(keys_of[i % len(keys_of)], fields)  # type: ignore[arg-type]
            await pipe.execute()


async def _drained(redis: RedisClient, keys: StreamKeys, streams: list[str], n: int) -> bool:
    read, pending = 0, 0
    for name in streams:
        for info in await redis.xinfo_groups(keys.stream(name)):
            read += int(info.get("entries-read") or 0)
            pending += int(info["pending"])
    return read >= n and pending == 0


@contextlib.asynccontextmanager
async def _workers(
    url: str, prefix: str, streams: int, count: int, label: str
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    await asyncio.to_thread(LOG_DIR.mkdir, parents=True, exist_ok=True)
    procs: list[asyncio.subprocess.Process] = []
    try:
        for i in range(count):
            with (LOG_DIR / f"scaleout-{label}-{i}.log").open("wb") as log:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.cluster_scaleout", "--worker", "--url", url,
                    "--prefix", prefix, "--consumer", f"c{i}", "--streams", str(streams),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )  # fmt: skip
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
            if line != "READY":
                raise RuntimeError(f"scaleout worker did not start: {line!r} (see {LOG_DIR})")
        yield procs
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def drain(url: str, topology: str, processes: int, streams: int, n: int, run: int) -> Drain:
    prefix = f"scaleout-{topology}-{processes}p-{run}-{os.getpid()}:"
    keys = StreamKeys(prefix)
    names = stream_names(streams)
    redis = redis_client_from_url(url)
    try:
        async with _workers(url, prefix, streams, processes, f"{topology}{processes}") as procs:
            await _fill(redis, keys, names, n)  # the groups exist (READY): a backlog to drain
            started = time.perf_counter()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"GO\n")
            deadline = started + 600
            while not await _drained(redis, keys, names, n):
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{topology} {processes}p: not drained in 600 s")
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
            results = []
            for proc in procs:
                assert proc.stdin is not None
                assert proc.stdout is not None
                proc.stdin.write(b"STOP\n")
                while True:
                    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
                    if line.startswith("RESULT ") or not line:
                        break
                results.append(json.loads(line[len("RESULT ") :]) if line else {})
                await asyncio.wait_for(proc.wait(), 60)
        handled = sum(int(r.get("handled", 0)) for r in results)
        cpu = sum(float(r.get("cpu_seconds", 0)) for r in results)
        return Drain(topology, processes, n / elapsed, cpu / n * 1e6, handled)
    finally:
        for name in names:
            key = keys.stream(name)
            await redis.delete(key, f"{key}.dlq")
        await redis.delete(keys.stream("jobs.lifecycle.v1"))
        await redis.aclose()


async def run(say: Say) -> tuple[list[Row], list[Target]]:
    n = env_int("BENCH_CLUSTER_MESSAGES", 20_000)
    streams = env_int("BENCH_CLUSTER_STREAMS", 8)
    rounds = env_int("BENCH_CLUSTER_ROUNDS", 3)
    say(f"cluster scale-out: {n} entries over {streams} job streams, {rounds} rounds, "
        f"load {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    runs: dict[tuple[str, int], list[Drain]] = {}
    with _single_node() as single_url, LocalCluster(masters=3) as cluster:
        urls = {"single": single_url, "cluster": cluster.url}
        for r in range(rounds):
            for topology in ("single", "cluster"):
                for processes in (1, 2):
                    result = await drain(urls[topology], topology, processes, streams, n, r)
                    runs.setdefault((topology, processes), []).append(result)
                    say(
                        f"  round {r + 1}: {topology} {processes}p {result.rate:,.0f} entries/s, "
                        f"CPU {result.cpu_us_per_entry:.0f} us/entry, handled {result.handled}"
                    )
    rate = {k: median([d.rate for d in v]) for k, v in runs.items()}
    cpu = {k: median([d.cpu_us_per_entry for d in v]) for k, v in runs.items()}
    detail = {f"{t}_{p}p": [d.__dict__ for d in v] for (t, p), v in runs.items()}
    rows = [
        Row("scaleout_single_1p", rate["single", 1], "msgs/s", detail=detail),
        Row.against("scaleout_single_2p", rate["single", 2], "msgs/s", rate["single", 1]),
        Row.against("scaleout_cluster_1p", rate["cluster", 1], "msgs/s", rate["single", 1]),
        Row.against("scaleout_cluster_2p", rate["cluster", 2], "msgs/s", rate["single", 2]),
        Row.against("scaleout_cluster_2p_vs_1p", rate["cluster", 2], "msgs/s", rate["cluster", 1]),
        Row("scaleout_cpu_per_entry_single_1p", cpu["single", 1], "us"),
        Row.against("scaleout_cpu_per_entry_cluster_1p", cpu["cluster", 1], "us", cpu["single", 1]),
    ]
    lost = [d for v in runs.values() for d in v if d.handled != n]
    targets = [
        Target("every entry handled once, both topologies", not lost,
               f"{len(lost)} drain(s) with handled != {n}"),
    ]  # fmt: skip
    return rows, targets


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_scaleout")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--url", default="")
    parser.add_argument("--prefix", default="")
    parser.add_argument("--consumer", default="c0")
    parser.add_argument("--streams", type=int, default=8)
    return parser.parse_args(argv)


def _say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    arguments = _parse()
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        if arguments.worker:
            sys.exit(runner.run(_worker_main(arguments)))
        found, wanted = runner.run(run(_say))
        for row in found:
            ratio = f" (x{row.ratio:.2f} of {row.baseline:,.1f})" if row.ratio else ""
            _say(f"  {row.name}: {row.value:,.1f} {row.unit}{ratio}")
        for target in wanted:
            _say(f"  target {target.label}: {'met' if target.met else 'NOT met'} ({target.detail})")
