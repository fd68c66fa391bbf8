"""jobsctl on real Redis, through its command line (Typer's runner, in process).

The figures and effects are servicekit.operations' (tested there); these tests hold the face to
them: what each command prints, changes and refuses, and that no secret reaches the terminal.
"""

import json
import socket
from collections.abc import Iterator

import pytest
from redis import Redis, RedisCluster
from typer.testing import CliRunner

from contracts import NOTES_CREATED
from jobsctl.cli import app, parse_time
from servicekit import StreamKeys
from servicekit.connections import cluster_url
from servicekit.operations import AUDIT_STREAM
from servicekit.wire import DATA_FIELD, encode_envelope

GROUP = "archiver"  # reads notes.created.v1 (contracts)


@pytest.fixture
def env(redis_url: str, stream_prefix: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "STREAM_PREFIX": stream_prefix, "COLUMNS": "200"}


@pytest.fixture
def redis(redis_url: str, stream_prefix: str) -> Iterator[Redis | RedisCluster]:
    seed = cluster_url(redis_url)
    client = Redis.from_url(redis_url) if seed is None else RedisCluster.from_url(seed)
    yield client
    for key in client.scan_iter(match=f"*{stream_prefix}*"):
        client.delete(key)
    client.close()


def jobsctl(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def dead_letter(redis: Redis, keys: StreamKeys, n: int, error_class: str) -> str:
    data = encode_envelope(json.dumps({"n": n}).encode(), {"content-type": "application/json"})
    fields = {DATA_FIELD: data, "group": GROUP, "error_class": error_class,
              "error_message": f"no {n}", "attempts": "5", "trace_id": "ab" * 16}  # fmt: skip
    return redis.xadd(keys.dead_letters(NOTES_CREATED), fields).decode()  # type: ignore[union-attr,arg-type]


def test_status_json_reports_the_group_as_redis_does(
    env: dict[str, str], redis: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    key = keys.stream(NOTES_CREATED)
    for n in range(3):
        redis.xadd(key, {"n": n})
    redis.xgroup_create(key, GROUP, id="0")
    redis.xreadgroup(GROUP, "worker-1", {key: ">"}, count=1)

    code, output = jobsctl(env, "status", "--stream", NOTES_CREATED, "--group", GROUP, "--json")

    assert code == 0, output
    [row] = json.loads(output)
    assert (row["length"], row["lag"], row["pending"]) == (3, 2, 1)
    assert [c["name"] for c in row["consumers"]] == ["worker-1"]
    code, table = jobsctl(env, "status", "--stream", NOTES_CREATED)
    assert code == 0
    assert GROUP in table
    assert "running" in table


def test_unknown_names_are_refused_with_the_known_ones(env: dict[str, str]) -> None:
    code, output = jobsctl(env, "status", "--stream", "notes.nope.v1")
    assert code == 2
    assert "unknown stream 'notes.nope.v1'" in output
    assert NOTES_CREATED in output
    code, output = jobsctl(env, "pause", "nobody")
    assert code == 2
    assert "unknown group 'nobody'" in output


def test_redrive_dry_run_moves_nothing_then_redrive_moves_the_filtered_once(
    env: dict[str, str], redis: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    wanted = dead_letter(redis, keys, 1, "ValueError")
    dead_letter(redis, keys, 2, "KeyError")
    args = ["dlq", "redrive", "--stream", NOTES_CREATED, "--error-class", "ValueError"]

    code, output = jobsctl(env, *args, "--dry-run")
    assert code == 0, output
    assert "1 dead letter(s) would move" in output
    assert redis.xlen(keys.dead_letters(NOTES_CREATED)) == 2
    assert redis.exists(keys.stream(NOTES_CREATED)) == 0

    code, output = jobsctl(env, *args, "--as", "ann")
    assert code == 0, output
    assert "redrove 1 of 1" in output
    [(_, fields)] = redis.xrange(keys.stream(NOTES_CREATED))
    assert json.loads(fields[DATA_FIELD.encode()])["headers"]["redriven_from"] == wanted
    assert jobsctl(env, *args, "--as", "ann")[1].count("redrove 0 of 0") == 1
    audit = [f for _, f in redis.xrange(keys.stream(AUDIT_STREAM))]
    assert [(a[b"operator"], a[b"count"]) for a in audit] == [(b"ann", b"1"), (b"ann", b"0")]

    code, output = jobsctl(env, "dlq", "list", "--stream", NOTES_CREATED, "--json")
    assert code == 0
    [left] = json.loads(output)
    assert left["error_class"] == "KeyError"
    assert left["trace_id"] == "ab" * 16
    code, output = jobsctl(env, "dlq", "show", NOTES_CREATED, left["id"])
    assert code == 0
    assert json.loads(output)["body"] == {"n": 2}


def test_purge_needs_yes(env: dict[str, str], redis: Redis, stream_prefix: str) -> None:
    keys = StreamKeys(stream_prefix)
    dead_letter(redis, keys, 1, "ValueError")
    code, output = jobsctl(env, "dlq", "purge", "--stream", NOTES_CREATED)
    assert code == 2
    assert "--yes" in output
    assert redis.xlen(keys.dead_letters(NOTES_CREATED)) == 1
    code, output = jobsctl(env, "dlq", "purge", "--stream", NOTES_CREATED, "--yes")
    assert code == 0
    assert "purged 1" in output
    assert redis.xlen(keys.dead_letters(NOTES_CREATED)) == 0


def test_pause_and_resume_set_the_flag_on_every_stream_the_group_reads(
    env: dict[str, str], redis: Redis, stream_prefix: str
) -> None:
    keys = StreamKeys(stream_prefix)
    code, output = jobsctl(env, "pause", GROUP, "--as", "ann")
    assert code == 0, output
    assert redis.exists(keys.paused(NOTES_CREATED, GROUP)) == 1
    code, output = jobsctl(env, "status", "--group", GROUP, "--json")
    assert code == 0
    assert all(row["paused"] for row in json.loads(output))
    assert jobsctl(env, "resume", GROUP)[0] == 0
    assert redis.exists(keys.paused(NOTES_CREATED, GROUP)) == 0


def test_prune_keeps_a_consumer_that_owns_entries(
    env: dict[str, str], redis: Redis, stream_prefix: str
) -> None:
    key = StreamKeys(stream_prefix).stream(NOTES_CREATED)
    redis.xadd(key, {"n": 1})
    redis.xgroup_create(key, GROUP, id="0")
    redis.xreadgroup(GROUP, "busy", {key: ">"}, count=1)
    redis.xgroup_createconsumer(key, GROUP, "gone")
    code, output = jobsctl(env, "consumers", "prune", "--group", GROUP, "--stream",
                           NOTES_CREATED, "--idle-for", "0")  # fmt: skip
    assert code == 0, output
    assert "pruned gone" in output
    assert [c["name"] for c in redis.xinfo_consumers(key, GROUP)] == [b"busy"]


def test_a_redis_failure_names_the_url_without_its_password(env: dict[str, str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends
    broken = {**env, "REDIS_URL": f"redis://ops:s3cr3t-pass@127.0.0.1:{port}/0"}
    code, output = jobsctl(broken, "status")
    assert code == 1
    assert f"redis://ops:***@127.0.0.1:{port}/0" in output
    assert "s3cr3t-pass" not in output


def test_stream_show_prints_the_newest_entries_decoded(
    env: dict[str, str], redis: Redis, stream_prefix: str
) -> None:
    key = StreamKeys(stream_prefix).stream(NOTES_CREATED)
    for n in range(3):
        data = encode_envelope(json.dumps({"type": NOTES_CREATED, "n": n}).encode(),
                               {"content-type": "application/json"})  # fmt: skip
        redis.xadd(key, {DATA_FIELD: data})

    code, output = jobsctl(env, "stream", "show", NOTES_CREATED, "--count", "2")

    assert code == 0, output
    shown = json.loads(output)
    assert [e["body"]["n"] for e in shown] == [2, 1]
    assert shown[0]["event_type"] == NOTES_CREATED
    assert jobsctl(env, "stream", "show", "no.such.v1")[0] == 2


def test_times_are_iso_or_ages() -> None:
    assert parse_time("2026-01-02T03:04:05+00:00") is not None
    assert parse_time("2026-01-02T03:04:05").tzinfo is not None  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")
