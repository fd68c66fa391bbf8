"""The console in a real browser (Debian's chromium + chromedriver, headless, through Selenium),
in front of the platform's real processes: notes-api, notes-api-worker and the archiver, on a
fresh database and key prefix.

The cause is one an operator meets: the archiver's `snapshots` table is renamed (a migration gone
wrong), so its archive jobs fail, are retried and dead-lettered, and notes-api records them
`dead`. Ten attempts with the archiver's backoff take about four minutes; the test fast-forwards
it, moving the due times in the group's retry set to now (the runtime's own key, nothing in the
services is hooked). Then the table is put back and the operator, in the browser: finds the dead
letters from the queue table, opens one, follows it to its job (dead), dry-runs and redrives it,
sees the job succeed on the job page, redrives the rest paced at one a second and watches the
progress, and opens the stream's page. Screenshots go to ``CONSOLE_SCREENSHOTS`` (else the test's
temporary directory). Without the browser the test says how to install it and is skipped
(`.ci/run` installs it).
"""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from redis import Redis as SyncRedis

from console.app import create_app
from console.settings import ConsoleSettings
from contracts import JobType, Priority, Service, job_stream
from servicekit import StreamKeys
from servicekit.testing import ServiceProcess, create_database, drop_database, free_port

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no chromium/chromedriver: apt-get install -y --no-install-recommends chromium "
    "chromium-driver (the browser test of the console is skipped)",
)

TOKEN = "browser-test-console-token-0123456789"
OPERATOR_TOKEN = "browser-test-operator-token-0123456789abcdef"
ARCHIVE = job_stream(JobType.ARCHIVE, Priority.DEFAULT)
GROUP = str(Service.ARCHIVER)
NOTES = 3
WAIT = 60.0


def until(check: Callable[[], Any], what: str | Callable[[], str], timeout: float = WAIT) -> Any:
    """Poll ``check`` until it returns something true, or fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what() if callable(what) else what}")


def fresh(read: Callable[[], Any]) -> Any:
    """``read()``, or None when the element it used was replaced meanwhile (retry then)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return read()
    except (StaleElementReferenceException, NoSuchElementException):
        return None


def sql(url: str, statement: str) -> Any:
    """Run one statement on the platform's database; return its first value."""

    async def run() -> Any:
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetchval(statement)
        finally:
            await connection.close()

    return asyncio.run(run())


@dataclass
class Platform:
    """notes-api (HTTP), notes-api-worker and the archiver as processes, and how to reach them."""

    api: str
    database_url: str
    env: dict[str, str]
    processes: list[ServiceProcess]

    def create_key(self, owner: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "notes_api", "create-key", "--owner", owner],
            env=self.env, capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        return out.stdout.strip().splitlines()[-1]


@pytest.fixture
def platform(
    postgres_admin_url: str, redis_url: str, stream_prefix: str, tmp_path: Path
) -> Iterator[Platform]:
    """The three processes on a fresh database and key prefix; SIGTERM at the end (exit 0)."""
    name = f"console_platform_{uuid.uuid4().hex[:12]}"
    database_url = asyncio.run(create_database(postgres_admin_url, name))
    port = free_port()
    env = {
        **os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "STREAM_PREFIX": stream_prefix, "PORT": str(port), "HOST": "127.0.0.1",
        "OPERATOR_TOKENS": OPERATOR_TOKEN, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO",
    }  # fmt: skip
    processes = [
        ServiceProcess(module, {**env, "OPS_PORT": str(free_port())}, tmp_path / f"{module}.log")
        for module in ("notes_api", "notes_api.worker", "archiver")
    ]
    try:
        processes[0].migrate()
        processes[2].migrate()
        for process in processes:
            process.start(consumer=f"console-test-{process.module}")
        for process in processes:
            until(lambda p=process: p.status("/readyz") == 200, f"{process.module} ready")  # type: ignore[misc]
        yield Platform(f"http://127.0.0.1:{port}", database_url, env, processes)
        codes = {p.module: p.signal(signal.SIGTERM) for p in processes}
        assert codes == dict.fromkeys(codes, 0), codes
    finally:
        for process in processes:
            process.stop()
        print(f"platform logs: {tmp_path}")
        asyncio.run(drop_database(postgres_admin_url, name))
        redis = SyncRedis.from_url(redis_url)  # the keys, once no process uses them
        for key in redis.scan_iter(match=f"*{stream_prefix}*"):
            redis.delete(key)
        redis.close()


@pytest.fixture
def console_url(platform: Platform, redis_url: str, stream_prefix: str) -> Iterator[str]:
    """The console's app under uvicorn on a free port, configured as in production."""
    settings = ConsoleSettings(
        redis_url=redis_url, stream_prefix=stream_prefix, console_tokens=f"sre:{TOKEN}",
        console_cookie_secure=False, notes_api_url=platform.api,
        notes_api_operator_token=OPERATOR_TOKEN,
    )  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_config=None, lifespan="on"))  # fmt: skip
    thread = threading.Thread(target=server.run)
    thread.start()
    until(lambda: server.started, "the console to listen")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as Driver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Driver(executable_path=str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def dead_letter_archive_jobs(platform: Platform, redis: SyncRedis, keys: StreamKeys,
                             api: httpx.Client) -> list[str]:  # fmt: skip
    """Archive jobs that die of a renamed table, as notes-api records them; then the fix."""
    notes = [api.post("/v1/notes", json={"title": f"note {n}", "body": "text"}).json()
             for n in range(NOTES)]  # fmt: skip
    stored = "SELECT count(*) FROM archiver.note_versions"
    until(lambda: sql(platform.database_url, stored) == NOTES, "the archiver to store the notes")
    sql(platform.database_url, "ALTER TABLE archiver.snapshots RENAME TO snapshots_moved_aside")
    jobs = [api.post(f"/v1/notes/{note['id']}/archive").json()["job_id"] for note in notes]

    retry_set = keys.retry(ARCHIVE, GROUP)

    def all_dead_lettered() -> bool:
        # Fast-forward the backoff: every retry waiting in the archiver's set is due now.
        waiting = redis.zrange(retry_set, 0, -1)
        if waiting:
            redis.zadd(retry_set, dict.fromkeys(waiting, 0), xx=True)
        return int(redis.xlen(keys.dead_letters(ARCHIVE))) == NOTES

    until(all_dead_lettered, lambda: f"{NOTES} dead letters on {ARCHIVE}; "
          f"{redis.xlen(keys.dead_letters(ARCHIVE))} so far", timeout=120)  # fmt: skip

    def statuses() -> list[str]:
        return [api.get(f"/v1/jobs/{job}").json()["status"] for job in jobs]

    until(lambda: statuses() == ["dead"] * NOTES, lambda: f"jobs recorded dead: {statuses()}")
    sql(platform.database_url, "ALTER TABLE archiver.snapshots_moved_aside RENAME TO snapshots")
    return jobs


def test_an_operator_redrives_dead_archive_jobs_and_sees_them_succeed(
    platform: Platform, console_url: str, browser: Any, screenshots: Path, redis_url: str,
    stream_prefix: str,
) -> None:  # fmt: skip
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    keys = StreamKeys(stream_prefix)
    redis = SyncRedis.from_url(redis_url)
    owner = {"Authorization": f"Bearer {platform.create_key('alice')}"}
    api = httpx.Client(base_url=platform.api, timeout=10, headers=owner)

    def shot(name: str) -> None:
        assert browser.save_screenshot(str(screenshots / f"{name}.png"))

    def text_of(element_id: str) -> str | None:
        return fresh(lambda: browser.find_element(By.ID, element_id).text)  # type: ignore[no-any-return]

    try:
        jobs = dead_letter_archive_jobs(platform, redis, keys, api)

        browser.get(console_url + "/")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "login").click()
        # The table body is replaced every 5 s (console.js): each use finds the row afresh.
        count = f'tr[data-stream="{ARCHIVE}"][data-group="{GROUP}"] a[href^="/dead-letters"]'
        until(lambda: fresh(lambda: browser.find_element(By.CSS_SELECTOR, count).text)
              == str(NOTES), "the archiver's row with its dead letters")  # fmt: skip
        shot("1-queues")

        until(lambda: fresh(lambda: browser.find_element(By.CSS_SELECTOR, count).click()
                            or True), "a click on the dead-letter count")  # fmt: skip
        until(lambda: "/dead-letters" in browser.current_url, "the dead letters page")
        Select(browser.find_element(By.ID, "filter-stream")).select_by_value(ARCHIVE)
        browser.find_element(By.ID, "find").click()
        until(lambda: "stream=jobs.archive.default" in browser.current_url, "the filtered list")
        letters = browser.find_elements(By.CSS_SELECTOR, "a.letter")
        assert len(letters) == NOTES
        shot("2-dead-letters")

        letters[0].click()
        error = browser.find_element(By.ID, "error").text
        assert "snapshots" in error  # the renamed table, as the database said it
        assert browser.find_element(By.ID, "trace-id").text != "none"
        job_id = browser.find_element(By.ID, "job-link").text
        assert job_id in jobs
        shot("3-dead-letter")

        browser.find_element(By.ID, "job-link").click()
        assert browser.find_element(By.ID, "job-status").text == "dead"
        browser.back()

        browser.find_element(By.ID, "dry-run").click()
        assert browser.find_element(By.ID, "would-move").text == "1"
        assert redis.xlen(keys.dead_letters(ARCHIVE)) == NOTES  # a dry run moves nothing
        shot("4-dry-run")

        browser.find_element(By.ID, "redrive").click()
        until(lambda: "/redrives/" in browser.current_url, "the redrive's page")
        until(lambda: (text_of("redrove") or "").startswith("Redrove 1 of 1"),
              lambda: f"the redrive to finish; page: {text_of('redrive-run')!r}")  # fmt: skip
        shot("5-redriven")

        browser.get(console_url + "/jobs")
        browser.find_element(By.ID, "job-id-input").send_keys(job_id)
        browser.find_element(By.ID, "look-up").click()

        def succeeded() -> bool:
            if text_of("job-status") == "succeeded":
                return True
            browser.refresh()
            return False

        until(succeeded, lambda: f"job {job_id} succeeded; page says {text_of('job-status')!r}")
        timeline = browser.find_element(By.ID, "job-timeline").text
        assert "dead" in timeline
        assert "succeeded" in timeline
        shot("6-job-succeeded")

        browser.get(f"{console_url}/dead-letters?stream={ARCHIVE}")
        assert len(browser.find_elements(By.CSS_SELECTOR, "a.letter")) == NOTES - 1
        browser.find_element(By.NAME, "per_second").send_keys("1")
        browser.find_element(By.ID, "dry-run-all").click()
        assert browser.find_element(By.ID, "would-move").text == str(NOTES - 1)
        browser.find_element(By.ID, "redrive").click()
        until(lambda: "/redrives/" in browser.current_url, "the paced redrive's page")
        if text_of("run-progress") is not None:  # still running (one a second): show it
            shot("7-redrive-progress")
        until(lambda: (text_of("redrove") or "").startswith(f"Redrove {NOTES - 1} of {NOTES - 1}"),
              "the paced redrive to finish")  # fmt: skip

        def statuses() -> list[str]:
            return [api.get(f"/v1/jobs/{job}").json()["status"] for job in jobs]

        until(lambda: statuses() == ["succeeded"] * NOTES, lambda: f"every job: {statuses()}")
        assert redis.xlen(keys.dead_letters(ARCHIVE)) == 0
        audit = redis.xrange(keys.stream("ops.audit.v1"))
        assert [(f[b"operator"], f[b"count"]) for _, f in audit] == [(b"sre", b"1"), (b"sre", b"2")]

        browser.get(f"{console_url}/streams/{ARCHIVE}")
        assert browser.find_element(By.ID, "stream-name").text == ARCHIVE
        types = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".event-type")}
        assert types == {"jobs.archive.requested.v1"}, types
        shot("8-stream")
    finally:
        print(f"console screenshots: {screenshots}")
        api.close()
        redis.close()
