"""The platform on a Redis that requires TLS and a user per service, as the deploy stack runs it.

The private redis-server serves TLS only (``--port 0 --tls-port P``, a certificate from a
``trustme`` CA) and loads the stack's ACL file (``deploy/redis/users.acl.template`` rendered with
test passwords): each process connects with ``rediss://<its user>:<password>@...`` and
``REDIS_CA_CERT``, so the archive flow proves that the shipped grants are enough, and a service's
user is shown to be refused what is outside its grant.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis

from harness import Platform, PrivateRedis, archive_a_note, catalogue, private_platform
from harness.secure_redis import ADMIN, acl_password, make_tls, render_acl


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    directory = tmp_path_factory.mktemp("secure")
    acl = render_acl(directory / "users.acl")
    users = set(re.findall(r"^user (\S+)", acl.read_text(), re.MULTILINE))
    missing = set(catalogue()) - users
    assert not missing, f"processes without a Redis user in users.acl.template: {missing}"
    server = PrivateRedis(
        directory / "redis",
        tls=make_tls(directory / "tls"),
        acl_file=acl,
        admin=(ADMIN, acl_password(ADMIN)),
    )
    own_user = {
        name: {"REDIS_URL": server.url_for(name, acl_password(name))} for name in catalogue()
    }
    # Rate limits on: notes-api's own Redis use (its token buckets) goes through its grant too.
    # Its decision timeout (0.25 s) covers the first request's connect and TLS handshake, which
    # took longer on the loaded machine (the request fell back to local buckets): 5 s here.
    with private_platform(
        directory,
        redis=server,
        service_env=own_user,
        env={"RATE_LIMITS_ENABLED": "true", "RATE_LIMIT_REDIS_TIMEOUT_SECONDS": "5"},
        start=False,
    ) as running:
        # One at a time: a Python TLS handshake takes seconds on a loaded 2-core machine, and
        # five processes opening their pools at once overran the 5 s connect timeout (a failed
        # connection ends a process's job task, and the process exits 1).
        for name in catalogue():
            running.start(name)
        yield running
        codes = running.close()
        assert codes == dict.fromkeys(codes, 0), f"unclean shutdown {codes}"


def _user(platform: Platform, name: str) -> redis.Redis:
    assert platform.redis is not None
    return platform.redis.client(platform.redis.url_for(name, acl_password(name)))


def test_the_archive_flow_runs_over_tls_each_process_as_its_own_user(
    platform: Platform,
) -> None:
    assert platform.env["REDIS_URL"].startswith("rediss://")
    with platform.redis_client() as admin:
        admin.acl_log_reset()
        archive_a_note(platform, "tls-alice")
        assert admin.acl_log() == []  # every command of the flow was within its user's grant
        # notes-api connects at its first rate-limited request; the others as they start.
        connected = {c["user"] for c in admin.client_list()}
    assert set(catalogue()) <= connected, connected
    assert "rate_limit.redis_unavailable" not in platform.log_tail("notes-api", 200)


def test_the_server_takes_no_plaintext_connection(platform: Platform) -> None:
    assert platform.redis is not None
    plain = redis.Redis(port=platform.redis.port, socket_timeout=2, socket_connect_timeout=2)
    with pytest.raises(redis.ConnectionError):
        plain.ping()


def test_a_services_user_is_refused_what_is_outside_its_grant(platform: Platform) -> None:
    with _user(platform, "archiver") as archiver:
        assert archiver.ping()
        assert archiver.xlen("{jobs.archive}.default") >= 0  # its own stream: allowed
        with pytest.raises(redis.exceptions.NoPermissionError):
            archiver.flushall()
        with pytest.raises(redis.exceptions.NoPermissionError):
            archiver.xadd("{notes.created.v1}", {"forged": "1"})  # notes-api-worker publishes it
        with pytest.raises(redis.exceptions.NoPermissionError):
            archiver.get("ratelimit:anyone")  # notes-api's token buckets
    with _user(platform, "notes-api") as api, pytest.raises(redis.exceptions.NoPermissionError):
        api.xrange("{jobs.archive}.default")  # the API itself never reads the job streams
    with pytest.raises(redis.exceptions.AuthenticationError):
        platform.redis.client(platform.redis.url_for("archiver", "wrong")).ping()  # type: ignore[union-attr]
