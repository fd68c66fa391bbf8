"""`notes-api-worker [run | replay-outbox --since DURATION]` (run by default).

`replay-outbox` republishes the outbox rows published within the last DURATION (`90s`, `10m`,
`2h`, `1d`): the recovery after Redis lost events it had acknowledged. Consumers dedupe by event
id, so entries that survived are not applied twice.
"""

import argparse
import asyncio
import re
from collections.abc import Sequence
from datetime import timedelta

from notes_api.settings import SCHEMA, WorkerSettings
from servicekit import (
    OutboxRelay,
    StreamKeys,
    create_database_engine,
    create_redis,
    run_until_stopped,
    setup_telemetry,
)

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str) -> timedelta:
    """`10m` → 10 minutes (units s, m, h, d); for argparse."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration like 90s, 10m, 2h or 1d: {text!r}")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


async def replay_outbox(settings: WorkerSettings, since: timedelta) -> int:
    setup_telemetry(settings).shutdown()  # logging configured, so the relay's lines are JSON too
    engine = create_database_engine(settings)
    redis = create_redis(settings)
    relay = OutboxRelay(
        engine, redis, schema=SCHEMA, keys=StreamKeys(settings.stream_prefix),
        durability=settings.outbox_durability_policy(),
    )  # fmt: skip
    try:
        replayed = await relay.replay_published(since)
    finally:
        await redis.aclose()
        await engine.dispose()
    print(f"replayed {replayed} event(s) published in the last {since}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notes-api-worker", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the worker until SIGTERM (the default)")
    replay = commands.add_parser("replay-outbox", help="republish recently published events")
    replay.add_argument("--since", type=duration, required=True, help="e.g. 10m, 2h, 1d")
    args = parser.parse_args(argv)
    if args.command == "replay-outbox":
        return asyncio.run(replay_outbox(WorkerSettings(), args.since))
    from notes_api.worker.app import run

    return run_until_stopped(run)
