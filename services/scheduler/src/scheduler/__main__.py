"""``scheduler`` runs the service; ``scheduler schedules`` lists the schedules and next fires.

``scheduler history <schedule> [N]`` prints a schedule's latest N fire records (JSON lines).
An invalid schedules file stops either command with a message naming the schedule (exit 2).
"""

import asyncio
import json
import sys
from datetime import UTC, datetime

from scheduler.app import run
from scheduler.schedules import ScheduleError, load_schedules
from scheduler.settings import SchedulerSettings
from scheduler.store import SchedulerStore
from servicekit import StreamKeys, create_redis, run_until_stopped


def main() -> int:
    settings = SchedulerSettings()
    try:
        schedules = load_schedules(settings.schedules_file)
    except ScheduleError as exc:
        print(f"scheduler: {exc}", file=sys.stderr)
        return 2
    match sys.argv[1:]:
        case []:
            return run_until_stopped(lambda stop: run(settings, schedules, stop))
        case ["schedules"]:
            now = datetime.now(UTC)
            for s in schedules:
                state = "paused" if s.paused else s.next_tick(now).isoformat()
                print(f"{s.name}\t{s.cron}\t{s.timezone}\t{s.event.type_name()}\t{state}")
            return 0
        case ["history", name, *limit] if len(limit) <= 1:
            found = [s for s in schedules if s.name == name]
            if not found:
                print(f"scheduler: no schedule {name!r}", file=sys.stderr)
                return 2
            return asyncio.run(
                _history(settings, found[0].stream, name, int(limit[0]) if limit else 20)
            )
        case _:
            print("usage: scheduler [schedules | history SCHEDULE [N]]", file=sys.stderr)
            return 2


async def _history(settings: SchedulerSettings, stream: str, name: str, limit: int) -> int:
    redis = create_redis(settings)
    try:
        records = await SchedulerStore(redis, StreamKeys(settings.stream_prefix)).history(
            stream, name, limit=limit
        )
    finally:
        await redis.aclose()
    for record in records:
        print(json.dumps(record.as_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
