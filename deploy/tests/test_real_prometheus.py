"""The dashboards and alerts against a real Prometheus scraping the real services.

The services in this tree (and scheduler / fanout once their console scripts are installed) run
on real PostgreSQL and a real redis-server loaded with the stack's ACL file, each process as its
own ACL user (``ACL_VERIFIED``; a service not yet in it runs as admin and the test says so), so
the ACLs are proven to allow what the services do; Prometheus (the Debian package
``prometheus``) scrapes every ops port with a config from ``stack.scrape_config`` (the function
that writes the compose stack's); traffic
exercises successes, retries and dead letters (and a delayed job and a bulk archive, which the
scheduler and fanout turn into a fire and a fan-out when they run). Then every Prometheus panel
query must return series, and every selector inside every alert must match series: a panel that
can never show anything, or an alert on a label value nobody emits, fails here by name.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import panels
import pytest
import yaml
from acl_redis import AclRedis, acl_redis
from promql import selectors
from redis.asyncio import Redis
from stack import PENDING_SERVICES, TARGETS, Target, pending_service_of, render, scrape_config

from contracts import ArchiveRequested, Priority
from servicekit import StreamKeys
from servicekit.jobs import enqueue

BIN = Path(sys.executable).parent
RULES = Path(__file__).resolve().parent.parent / "prometheus" / "rules"
ACL_VERIFIED = frozenset({"notes-api", "notes-api-worker", "archiver", "scheduler", "fanout"})
"""Processes whose ACL user (deploy/redis/users.acl.template) this test has run them under (the
scheduler's against main at 535a021 and fanout's against branch fanout at 4a9275e, before they
were merged here)."""
SCRAPE_INTERVAL = "2s"
RATE_WINDOW = (
    "1m"  # stands in for Grafana's $__rate_interval: many scrapes, so a slow one is no gap
)
EVERY_SECOND = "deploy-test-every-second"
SCHEDULES = f"""
[[schedule]]
name = "{EVERY_SECOND}"
cron = "* * * * * *"
timezone = "UTC"
event = "commands.purge_idempotency_keys.v1"
payload = {{ older_than = {{ seconds_before_tick = 0 }} }}
priority = "low"
overlap = "allow"
catch_up = "latest"
catch_up_window_seconds = 3600
"""
"""A schedule that fires every second, for the scheduler's panels (used where it is installed)."""

pytestmark = [
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="no prometheus binary: apt-get install --no-install-recommends prometheus",
    ),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server binary"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def installed(target: Target) -> bool:
    return (BIN / target.script).exists()


def wait_for(probe, within: float, what: str):  # type: ignore[no-untyped-def]
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"within {within} s: {what}"
        time.sleep(0.1)


@contextmanager
def process(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=out)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, object]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body.get("status") == "success", f"{expr}: {body}"
        result: list[dict[str, object]] = body["data"]["result"]
        return result


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[AclRedis]:
    """A redis-server of this test's own, with the stack's ACL users (so no key prefix)."""
    with acl_redis(tmp_path) as server:
        yield server


@pytest.fixture
def platform(
    database_url: str, redis: AclRedis, tmp_path: Path
) -> Iterator[tuple[dict[str, str], dict[str, str], list[str]]]:
    """(env, name -> ops address, names of targets not installed), every process running."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis.url("admin"),
        "STREAM_PREFIX": "",
        "OPS_HOST": "127.0.0.1",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "LOG_LEVEL": "INFO",
    }
    running = [t for t in TARGETS if installed(t)]
    missing = [t.name for t in TARGETS if not installed(t)]
    if "scheduler" not in missing:
        (tmp_path / "schedules.toml").write_text(SCHEDULES)
        env["SCHEDULES_FILE"] = str(tmp_path / "schedules.toml")
        # The scheduler's documented state (scheduler/store.py): the last tick it decided. Ten
        # seconds back, so with catch_up=latest its first pass records the ticks between as
        # missed, and the missed-fire alert's selector has a series to match.
        tag = StreamKeys("").tag("commands.purge_idempotency_keys.v1")
        redis.cli("SET", f"{tag}:schedule:{EVERY_SECOND}:last", str(int(time.time() - 10) * 1000))
    for target in running:
        if target.needs_postgres and target.name == target.package:  # the package's own script
            subprocess.run(
                [BIN / target.script, "migrate"], env=env, check=True, capture_output=True
            )
    addresses = {t.name: f"127.0.0.1:{free_port()}" for t in running}
    with ExitStack() as stack:
        for target in running:
            proc_env = {
                **env,
                "OPS_PORT": addresses[target.name].rsplit(":", 1)[1],
                "OTEL_SERVICE_NAME": target.name,
                "CONSUMER_NAME": f"prom-{target.name}",
                "REDIS_URL": redis.url(target.name if target.name in ACL_VERIFIED else "admin"),
            }
            command = [str(BIN / target.script), *target.command[1:]]
            stack.enter_context(process(command, proc_env, tmp_path / f"{target.name}.log"))
        for name, address in addresses.items():
            log = tmp_path / f"{name}.log"
            wait_for(
                lambda address=address: _ready(address),
                30,
                f"{name} ready on {address}/readyz; its log ends:\n{_tail(log)}",
            )
        yield env, addresses, missing


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _ready(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def prometheus(platform, tmp_path: Path) -> Iterator[Prometheus]:  # type: ignore[no-untyped-def]
    _, addresses, _ = platform
    config = scrape_config(addresses, interval=SCRAPE_INTERVAL, rule_files=(str(RULES / "*.yml"),))
    (tmp_path / "prometheus.yml").write_text(render(config))
    port = free_port()
    command = [
        shutil.which("prometheus") or "prometheus",
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--enable-feature=exemplar-storage",
        "--log.level=warn",
    ]
    with process(command, dict(os.environ), tmp_path / "prometheus.log"):
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ok(f"{url}/-/ready"), 30, "prometheus ready")
        yield Prometheus(url)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def drive_traffic(env: dict[str, str]) -> None:
    """Successes (notes, archive, copy), 4xx, a retry, a dead letter, a delayed and a bulk job."""
    key = subprocess.run(
        [BIN / "notes-api", "create-key", "--owner", "prom"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{env['PORT']}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    with api:
        notes = []
        for i in range(5):
            response = api.post("/v1/notes", json={"title": f"note {i}", "body": "b"})
            assert response.status_code == 201, response.text
            notes.append(response.json()["id"])
        for note in notes[:3]:
            assert api.post(f"/v1/notes/{note}/archive").status_code == 202
        assert api.post(f"/v1/notes/{notes[3]}/copy").status_code == 202
        run_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
        assert api.post(f"/v1/notes/{notes[4]}/archive", json={"run_at": run_at}).status_code == 202
        assert api.post("/v1/notes:bulk-archive", json={"all": True}).status_code == 202
        assert api.get(f"/v1/notes/{uuid.uuid4()}").status_code == 404
    asyncio.run(_broken_jobs(StreamKeys(env["STREAM_PREFIX"]), env["REDIS_URL"]))


async def _broken_jobs(keys: StreamKeys, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        # A version the archiver never received: a transient error, retried with backoff.
        unknown = ArchiveRequested(
            producer="deploy-test", owner_id="prom", job_id=uuid.uuid4(), note_id=uuid.uuid4(),
            version=1,
        )  # fmt: skip
        await enqueue(redis, keys, unknown, Priority.LOW)
        # An entry no consumer can decode: dead-lettered at once.
        await redis.xadd(keys.stream("jobs.archive.default"), {"garbage": "not an event"})
    finally:
        await redis.aclose()


def _has(prometheus: Prometheus, expr: str) -> bool:
    return bool(prometheus.query(expr))


def test_every_panel_and_alert_selector_has_data(platform, prometheus, redis) -> None:  # type: ignore[no-untyped-def]
    env, _, missing = platform
    drive_traffic(env)
    # Outcomes first (retrying, dead, succeeded), then enough samples for a rate window.
    for status in ("succeeded", "retrying", "dead"):
        wait_for(
            lambda s=status: _has(prometheus, f'job_processed_total{{status="{s}"}}'),
            45, f'job_processed_total{{status="{status}"}} scraped',
        )  # fmt: skip
    if "scheduler" not in missing:
        for series in (
            "scheduler_punctuality_seconds_count",
            'scheduler_fires_total{outcome="missed"}',
        ):
            wait_for(lambda s=series: _has(prometheus, s), 45, f"{series} scraped")
    wait_for(
        lambda: _has(prometheus, f"rate(job_processed_total[{RATE_WINDOW}]) > 0")
        and _has(prometheus, 'max_over_time(up[30s]) and count_over_time(up[30s]) > 5'),
        45, "rates over several scrapes",
    )  # fmt: skip

    skipped: list[str] = []
    empty: list[str] = []
    for uid, (_, board) in panels.DASHBOARDS.items():
        for panel in board:
            if panel.datasource != panels.PROMETHEUS_UID:
                skipped.append(
                    f"{uid}/{panel.title}: {panel.datasource} panel (no {panel.datasource} here)"
                )
                continue
            for query in panel.queries:
                pending = pending_service_of(query.expr)
                if pending in missing:
                    skipped.append(f"{uid}/{panel.title}: needs {pending}, not installed")
                    continue
                expr = query.expr.replace(panels.RATE, RATE_WINDOW)
                if not prometheus.query(expr):
                    empty.append(f"{uid}/{panel.title}: {expr}")

    recording = {}
    alerts = {}
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    recording[rule["record"]] = rule["expr"]
                else:
                    alerts[rule["alert"]] = rule["expr"]

    def raw_selectors(expr: str) -> list[str]:
        found = []
        for selector in selectors(expr):
            name = selector.split("{", 1)[0]
            found.extend(raw_selectors(recording[name]) if name in recording else [selector])
        return found

    unmatched: list[str] = []
    for alert, expr in alerts.items():
        for selector in raw_selectors(expr):
            pending = pending_service_of(selector)
            if pending in missing:
                skipped.append(f"alert {alert}: {selector} needs {pending}, not installed")
                continue
            if not prometheus.query(selector):
                unmatched.append(f"alert {alert}: {selector}")

    rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    unhealthy = [
        f"{rule['name']}: {rule.get('lastError')}"
        for group in rules
        for rule in group["rules"]
        if rule.get("health") not in ("ok", "unknown")
    ]

    unverified = [t.name for t in TARGETS if installed(t) and t.name not in ACL_VERIFIED]
    skipped += [f"{name}: ran as admin, its ACL user not yet verified" for name in unverified]
    # Latency panels link to traces: the job duration buckets carry trace ids as exemplars.
    exemplars = httpx.get(
        f"{prometheus.url}/api/v1/query_exemplars",
        params={"query": "job_duration_seconds_bucket", "start": time.time() - 300,
                "end": time.time()},
        timeout=10,
    ).json()["data"]  # fmt: skip
    trace_ids = [e["labels"].get("trace_id") for series in exemplars for e in series["exemplars"]]
    if not trace_ids or not all(trace_ids):
        empty.append(f"exemplars of job_duration_seconds_bucket: {exemplars}")

    # Every command a process ran under its ACL user was allowed: Redis logs each refusal.
    refusals = redis.refusals()
    if skipped:
        print("skipped (pending services / other datasources):", *skipped, sep="\n  ")
    assert not empty, "panels with no data:\n  " + "\n  ".join(empty)
    assert not unmatched, "alert selectors matching no series:\n  " + "\n  ".join(unmatched)
    assert not refusals, "Redis ACL refusals (ACL LOG):\n  " + "\n  ".join(refusals)
    assert not unhealthy, "rules failing to evaluate:\n  " + "\n  ".join(unhealthy)
    assert set(missing) <= set(PENDING_SERVICES), f"installed nowhere: {missing}"
