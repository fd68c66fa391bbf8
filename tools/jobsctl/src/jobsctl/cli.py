"""`jobsctl`: see and repair the platform's streams, groups and dead letters.

Connects with the services' own settings (`REDIS_URL`, `REDIS_CA_CERT` for `rediss://`,
`STREAM_PREFIX`), so it works under the same Redis ACL user and TLS as they do. Exit codes: 0 done,
1 Redis failed, 2 a bad argument (an unknown stream or group, a bad time, purge without `--yes`).
Commands that change something write an audit record (who: `--as`, else the login name).
"""

import asyncio
import getpass
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import Progress

from jobsctl import render, topology
from servicekit import ServiceSettings, StreamKeys, create_redis
from servicekit.operations import (
    DeadLetterFilter,
    find_dead_letters,
    group_status,
    inspect_dead_letter,
    pause_group,
    prune_consumers,
    purge,
    recent_entries,
    record_audit,
    redrive,
    resume_group,
)
from servicekit.redis_client import RedisClient
from servicekit.settings import redact_url

T = TypeVar("T")

app = typer.Typer(
    help="See and repair the platform's streams, groups and dead letters (REDIS_URL, "
    "STREAM_PREFIX). Exit 0 done, 1 Redis failed, 2 a bad argument.",
    no_args_is_help=True,
    add_completion=False,
)
dlq = typer.Typer(help="Dead letters: list, show, redrive, purge.", no_args_is_help=True)
consumers = typer.Typer(help="Consumers of a group.", no_args_is_help=True)
streams = typer.Typer(help="A stream's recent entries.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")
app.add_typer(streams, name="stream")
app.add_typer(consumers, name="consumers")


def out() -> Console:
    """Standard output: the terminal's width, or `COLUMNS` (200 when piped) so rows stay whole."""
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=200 if piped else None)


def err() -> Console:
    """Standard error: messages and progress bars, so `--json` output stays clean."""
    return Console(stderr=True)


StreamOpt = Annotated[str | None, typer.Option("--stream", "-s", help="A stream (default: all).")]
GroupOpt = Annotated[str | None, typer.Option("--group", "-g", help="A consumer group.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON for scripts instead of a table.")]
ErrorOpt = Annotated[str | None, typer.Option("--error-class", help="e.g. ValueError.")]
SinceOpt = Annotated[
    str | None, typer.Option(help="Dead-lettered since: an ISO time or an age (30m, 2h, 1d).")
]
UntilOpt = Annotated[str | None, typer.Option(help="Dead-lettered before: ISO time or an age.")]
IdOpt = Annotated[list[str] | None, typer.Option("--id", help="Only these dead letters.")]
AsOpt = Annotated[
    str | None, typer.Option("--as", help="Operator name for the audit record (default: login).")
]

_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class BadArgumentError(ValueError):
    """An argument jobsctl cannot use; exit 2 with its message."""


def parse_time(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """An ISO 8601 time (UTC when it has no offset) or an age before now (``30m``, ``2h``)."""
    if text is None:
        return None
    age = _AGE.fullmatch(text.strip())
    if age:
        return (now or datetime.now(UTC)) - timedelta(seconds=float(age[1]) * _UNIT[age[2]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        hint = "use ISO 8601 or an age like 30m, 2h, 1d"
        raise BadArgumentError(f"not a time: {text!r} ({hint})") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _operator(name: str | None) -> str:
    return name or getpass.getuser()


@asynccontextmanager
async def _connected() -> AsyncIterator[tuple[RedisClient, StreamKeys]]:
    settings = ServiceSettings()
    redis = create_redis(settings)
    try:
        yield redis, StreamKeys(settings.stream_prefix)
    finally:
        await redis.aclose()


def _run(work: Callable[[RedisClient, StreamKeys], Awaitable[T]]) -> T:
    """Run ``work`` on a connection; turn failures into a message and an exit code."""

    async def connected() -> T:
        async with _connected() as (redis, keys):
            return await work(redis, keys)

    try:
        return asyncio.run(connected())
    except (topology.UnknownNameError, BadArgumentError) as exc:
        err().print(f"jobsctl: {exc}")
        raise typer.Exit(2) from None
    except (RedisError, OSError) as exc:
        # The URL without its password: never a secret on the terminal or in a CI log.
        url = redact_url(ServiceSettings().redis_url)
        err().print(f"jobsctl: Redis at {url} failed: {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None


def _filter(
    group: str | None, error_class: str | None, since: str | None, until: str | None,
    ids: list[str] | None,
) -> DeadLetterFilter:  # fmt: skip
    return DeadLetterFilter(
        group=group, error_class=error_class, since=parse_time(since), until=parse_time(until),
        ids=frozenset(ids) if ids else None,
    )  # fmt: skip


@app.command()
def status(stream: StreamOpt = None, group: GroupOpt = None, as_json: JsonOpt = False) -> None:
    """Per stream and group: length, lag, pending, oldest pending age, consumers, dead letters."""

    async def work(redis: RedisClient, keys: StreamKeys) -> None:
        pairs = topology.select(stream, group)
        statuses = [await group_status(redis, keys, p.stream, p.group) for p in pairs]
        if as_json:
            print(render.status_json(statuses))
        else:
            render.status_table(out(), statuses)

    _run(work)


@dlq.command("list")
def dlq_list(
    stream: StreamOpt = None, group: GroupOpt = None, error_class: ErrorOpt = None,
    since: SinceOpt = None, until: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1)] = 100, as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Dead letters, oldest first: error class, attempts, times, trace id."""

    async def work(redis: RedisClient, keys: StreamKeys) -> None:
        where = _filter(group, error_class, since, until, None)
        letters = []
        for name in topology.stream_or_all(stream):
            letters += await find_dead_letters(redis, keys, name, where, limit=limit)
        letters = sorted(letters, key=lambda letter: letter.dead_lettered_at)[:limit]
        if as_json:
            print(render.letters_json(letters))
        else:
            render.letters_table(out(), letters)

    _run(work)


@dlq.command("show")
def dlq_show(
    stream: Annotated[str, typer.Argument(help="The stream it was dead-lettered from.")],
    dead_letter_id: Annotated[str, typer.Argument(help="Its id in <stream>.dlq.")],
) -> None:
    """One dead letter whole: every attempt's error and the original message (JSON)."""

    async def work(redis: RedisClient, keys: StreamKeys) -> None:
        letter = await inspect_dead_letter(
            redis, keys, topology.stream_or_all(stream)[0], dead_letter_id
        )
        if letter is None:
            raise BadArgumentError(f"no dead letter {dead_letter_id} on {stream}")
        print(render.letter_detail(letter))

    _run(work)


@streams.command("show")
def stream_show(
    stream: Annotated[str, typer.Argument(help="A stream some group reads.")],
    count: Annotated[int, typer.Option(min=1, max=1000, help="How many entries.")] = 10,
) -> None:
    """A stream's last entries, newest first, decoded (headers, body, trace id) as JSON."""

    async def work(redis: RedisClient, keys: StreamKeys) -> None:
        name = topology.stream_or_all(stream)[0]
        print(render.entries_json(await recent_entries(redis, keys, name, count=count)))

    _run(work)


@dlq.command("redrive")
def dlq_redrive(
    stream: Annotated[str, typer.Option("--stream", "-s", help="The stream to redrive.")],
    group: GroupOpt = None, error_class: ErrorOpt = None, since: SinceOpt = None,
    until: UntilOpt = None, ids: IdOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would move.")] = False,
    rate: Annotated[float | None, typer.Option(min=0.1, help="Letters a second at most.")] = None,
    limit: Annotated[int | None, typer.Option(min=1)] = None, operator: AsOpt = None,
) -> None:  # fmt: skip
    """Put dead letters back on their stream, once each, for the group that failed them."""

    async def work(redis: RedisClient, keys: StreamKeys) -> None:
        name = topology.stream_or_all(stream)[0]
        where = _filter(group, error_class, since, until, ids)
        with Progress(console=err(), transient=True) as progress:
            task = progress.add_task("redriving", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = await redrive(
                redis, keys, name, where, operator=_operator(operator), dry_run=dry_run,
                per_second=rate, limit=limit, progress=advance,
            )  # fmt: skip
        if dry_run:
            render.letters_table(out(), result.matched)
            out().print(f"dry run: {len(result.matched)} dead letter(s) would move to {name}")
        else:
            out().print(f"redrove {len(result.moved)} of {len(result.matched)} to {name}")

    _run(work)


@dlq.command("purge")
def dlq_purge(
    stream: Annotated[str, typer.Option("--stream", "-s", help="The stream whose letters go.")],
    group: GroupOpt = None, error_class: ErrorOpt = None, since: SinceOpt = None,
    until: UntilOpt = None, ids: IdOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete them.")] = False,
    operator: AsOpt = None,
) -> None:  # fmt: skip
    """Delete dead letters for good (needs --yes)."""
    if not yes:
        err().print("jobsctl: purge deletes dead letters for good; add --yes")
        raise typer.Exit(2)

    async def work(redis: RedisClient, keys: StreamKeys) -> None:
        name = topology.stream_or_all(stream)[0]
        where = _filter(group, error_class, since, until, ids)
        removed = await purge(redis, keys, name, where, operator=_operator(operator))
        out().print(f"purged {removed} dead letter(s) of {name}")

    _run(work)


def _pause_or_resume(group: str, stream: str | None, operator: str | None, *, pause: bool) -> None:
    async def work(redis: RedisClient, keys: StreamKeys) -> None:
        pairs = topology.select(stream, group)
        for pair in pairs:
            await (pause_group if pause else resume_group)(redis, keys, pair.stream, pair.group)
        action = "group.pause" if pause else "group.resume"
        for pair in pairs:
            await record_audit(redis, keys, operator=_operator(operator), action=action,
                               stream=pair.stream, count=1, detail={"group": group})  # fmt: skip
        done = "paused" if pause else "resumed"
        out().print(f"{done} {group} on {', '.join(p.stream for p in pairs)}")

    _run(work)


@app.command()
def pause(
    group: Annotated[str, typer.Argument(help="The consumer group.")],
    stream: StreamOpt = None, operator: AsOpt = None,
) -> None:  # fmt: skip
    """Stop a group taking new entries (on every stream it reads, or one); in-flight work ends.

    Its workers read the flag every second: from then on (and one blocking read later) they take
    nothing new.
    """
    _pause_or_resume(group, stream, operator, pause=True)


@app.command()
def resume(
    group: Annotated[str, typer.Argument(help="The consumer group.")],
    stream: StreamOpt = None, operator: AsOpt = None,
) -> None:  # fmt: skip
    """Let a paused group take work again."""
    _pause_or_resume(group, stream, operator, pause=False)


@consumers.command("prune")
def consumers_prune(
    stream: StreamOpt = None, group: GroupOpt = None,
    idle_for: Annotated[float, typer.Option(min=0, help="Seconds idle at least.")] = 3600,
    operator: AsOpt = None,
) -> None:  # fmt: skip
    """Remove consumers idle that long which own no entry (never one with pending work)."""

    async def work(redis: RedisClient, keys: StreamKeys) -> None:
        pruned = 0
        for pair in topology.select(stream, group):
            names = await prune_consumers(redis, keys, pair.stream, pair.group, idle_for=idle_for)
            for name in names:
                out().print(f"pruned {name} from {pair.group} on {pair.stream}")
            if names:
                detail = {"group": pair.group, "consumers": ",".join(names)}
                await record_audit(
                    redis, keys, operator=_operator(operator), action="consumers.prune",
                    stream=pair.stream, count=len(names), detail=detail,
                )  # fmt: skip
            pruned += len(names)
        out().print(f"pruned {pruned} consumer(s)")

    _run(work)


def main() -> None:
    """Console script entry point (Typer exits with the command's code)."""
    app()
