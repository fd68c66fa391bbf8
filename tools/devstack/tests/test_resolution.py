"""Where servers come from: environment, local, embedded (started, reused, restarted when stale).

The embedded cases start real Valkey and PostgreSQL servers from the wheels; the local addresses
are pointed at a dead port so that the embedded path runs on machines where local servers answer.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from devstack.embedded import EmbeddedValkey, free_port
from devstack.probe import hide_password, postgres_version, redis_version
from devstack.resolution import ServerStack


@pytest.fixture
def nothing_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """No URLs in the environment, and nothing answering at the local addresses."""
    dead = free_port()
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DEVSTACK_SERVERS", raising=False)
    monkeypatch.setenv("DEVSTACK_LOCAL_REDIS_URL", f"redis://127.0.0.1:{dead}/0")
    monkeypatch.setenv("DEVSTACK_LOCAL_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{dead}/x")


def _alive(pid: int) -> bool:
    # A stopped postmaster may linger as a zombie of a PID 1 that does not reap (containers).
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pid(url_file: Path) -> int:
    import json

    return int(json.loads(url_file.read_text())["pid"])


def test_urls_in_the_environment_win_and_start_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, postgres_admin_url: str
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", postgres_admin_url)
    monkeypatch.setenv("DEVSTACK_SERVERS", "embedded")
    with ServerStack(tmp_path, throwaway=False) as stack:
        resolved = stack.resolve()
        expected = {"REDIS_URL": redis_url, "DATABASE_URL": postgres_admin_url}
        assert resolved.environment() == expected
        assert (resolved.redis.origin, resolved.postgres.origin) == ("environment", "environment")
        assert not stack.started_any()
    assert not (tmp_path / "valkey").exists()


def test_local_servers_that_answer_are_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, redis_url: str, postgres_admin_url: str
) -> None:
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.delenv("DEVSTACK_SERVERS", raising=False)
    monkeypatch.setenv("DEVSTACK_LOCAL_REDIS_URL", redis_url)
    monkeypatch.setenv("DEVSTACK_LOCAL_DATABASE_URL", postgres_admin_url)
    with ServerStack(tmp_path, throwaway=False) as stack:
        resolved = stack.resolve()
        assert (resolved.redis.origin, resolved.postgres.origin) == ("local", "local")
        assert resolved.redis.version
        assert resolved.postgres.version
        assert not stack.started_any()


@pytest.mark.usefixtures("nothing_local")
def test_embedded_servers_start_when_nothing_answers_and_stop_on_close(tmp_path: Path) -> None:
    stack = ServerStack(tmp_path / "home", throwaway=True)
    with stack:
        resolved = stack.resolve()
        assert resolved.redis.origin == resolved.postgres.origin == "embedded (throw-away)"
        assert (resolved.redis.version or "").startswith("Valkey 8.1")
        assert (resolved.postgres.version or "").startswith("PostgreSQL 18")
        pids = [_pid(tmp_path / "home" / name / "server.json") for name in ("valkey", "postgres")]
        assert stack.resolve() is resolved  # decided once per command
    assert not (tmp_path / "home").exists()
    assert not any(_alive(pid) for pid in pids)
    assert redis_version(resolved.redis.url) is None
    assert postgres_version(resolved.postgres.url) is None


@pytest.mark.usefixtures("nothing_local")
def test_a_second_command_reuses_running_servers_and_leaves_them_to_their_owner(
    tmp_path: Path,
) -> None:
    with ServerStack(tmp_path, throwaway=False, adopt=True) as owner:
        first = owner.resolve()
        with ServerStack(tmp_path, throwaway=False) as guest:  # `make key` beside `make run`
            assert guest.resolve().environment() == first.environment()
            assert not guest.started_any()
        assert redis_version(first.redis.url)  # the guest did not stop them
        assert postgres_version(first.postgres.url)
    assert redis_version(first.redis.url) is None


@pytest.mark.usefixtures("nothing_local")
def test_a_durable_server_keeps_its_data_between_runs(tmp_path: Path) -> None:
    from redis import Redis

    with ServerStack(tmp_path, throwaway=False) as stack:
        client = Redis.from_url(stack.resolve().redis.url)
        client.set("kept", "yes")
        client.close()
    with ServerStack(tmp_path, throwaway=False) as stack:
        client = Redis.from_url(stack.resolve().redis.url)
        assert client.get("kept") == b"yes"
        client.close()


@pytest.mark.usefixtures("nothing_local")
def test_a_server_that_stopped_is_detected_and_started_again(tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", durable=False)
    valkey.start()
    pid = _pid(tmp_path / "valkey" / "server.json")
    os.kill(pid, signal.SIGKILL)
    psutil.Process(pid).wait(timeout=10)
    assert valkey.running() is None  # a stale state file is not trusted
    with ServerStack(tmp_path, throwaway=False) as stack:
        again = stack.resolve().redis
        assert again.origin == f"embedded ({tmp_path.name}/)"
        assert redis_version(again.url)
        assert _pid(tmp_path / "valkey" / "server.json") != pid


def test_servers_kind_local_fails_when_nothing_answers(
    nothing_local: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEVSTACK_SERVERS", "local")
    with ServerStack(tmp_path, throwaway=True) as stack, pytest.raises(RuntimeError, match="local"):
        stack.resolve()


def test_an_unknown_servers_kind_is_refused(
    nothing_local: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEVSTACK_SERVERS", "cloud")
    with ServerStack(tmp_path, throwaway=True) as stack, pytest.raises(ValueError, match="cloud"):
        stack.resolve()


def test_printed_urls_hide_passwords() -> None:
    assert hide_password("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert hide_password("postgresql://u:p4ss@h/db") == "postgresql://u:***@h/db"
    assert hide_password("redis://host:6379/0") == "redis://host:6379/0"


def test_a_recorded_pid_now_owned_by_another_process_is_neither_trusted_nor_signalled(
    tmp_path: Path,
) -> None:
    import json
    import subprocess

    bystander = subprocess.Popen(["sleep", "60"])
    try:
        home = tmp_path / "valkey"
        home.mkdir()
        state = {"url": "redis://127.0.0.1:1/0", "pid": bystander.pid, "started": 1.0}
        (home / "server.json").write_text(json.dumps(state))
        valkey = EmbeddedValkey(home, durable=False)
        assert valkey.running() is None
        valkey.start()
        valkey.stop()
        assert bystander.poll() is None, "the process that reused the pid was signalled"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_cluster_when_asked_is_a_redis_cluster_url_stopped_with_the_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis import RedisCluster

    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("DEVSTACK_REDIS_CLUSTER", "1")
    with ServerStack(tmp_path, throwaway=True) as stack:
        choice = stack.resolve().redis
        assert choice.url.startswith("redis+cluster://127.0.0.1:")
        assert choice.version is not None
        assert choice.version.endswith(" cluster")
        seed = choice.url.replace("redis+cluster://", "redis://")
        client = RedisCluster.from_url(seed)
        assert len(client.get_primaries()) == 3
        client.close()
    assert redis_version(choice.url) is None


def test_a_bad_cluster_switch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("DEVSTACK_REDIS_CLUSTER", "maybe")
    with (
        ServerStack(tmp_path, throwaway=True) as stack,
        pytest.raises(ValueError, match="DEVSTACK_REDIS_CLUSTER must be 1 or 0"),
    ):
        stack.resolve()
