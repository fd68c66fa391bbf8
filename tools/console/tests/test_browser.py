"""The console in a real browser (Debian's chromium + chromedriver, headless, through Selenium).

A handler on the archiver's declared stream and group fails every note at first, so the runtime
dead-letters them; the "fixed" handler then runs what the operator redrives. The operator logs in,
finds the dead letters, opens one, redrives it after a dry run, sees it handled, then redrives the
rest by filter. Screenshots go to ``CONSOLE_SCREENSHOTS`` (else the test's temporary directory).
Without the browser the test says how to install it and is skipped (`.ci/run` installs it).
"""

import asyncio
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import uvicorn
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from console.app import create_app
from console.settings import ConsoleSettings
from contracts import NOTES_CREATED, NoteCreated, NoteSnapshot
from servicekit import ServiceSettings, StreamKeys, setup_telemetry
from servicekit.jobs import JobRouter, Worker, publish

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no chromium/chromedriver: apt-get install -y --no-install-recommends chromium "
    "chromium-driver (the browser test of the console is skipped)",
)

TOKEN = "browser-test-console-token-0123456789"
GROUP = "archiver"  # reads notes.created.v1 (contracts)
WAIT = 20.0


def until(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``check`` until it returns something true, or fail saying ``what`` never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def note_created(n: int) -> NoteCreated:
    now = datetime.now(UTC)
    note = NoteSnapshot(id=uuid4(), owner_id="alice", title=f"note {n}", body="text", tags=[],
                        version=1, created_at=now, updated_at=now)  # fmt: skip
    return NoteCreated(producer="browser-test", owner_id="alice", note_id=note.id, version=1,
                       note=note)  # fmt: skip


class FlakyArchiver:
    """The archiver's group on its stream, with a handler that fails until it is fixed."""

    def __init__(self, redis_url: str, keys: StreamKeys) -> None:
        self.broken = True
        self.handled: set[UUID] = set()
        self.router = JobRouter(group=GROUP)
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(redis_url, keys),))

        @self.router.event(NoteCreated, stream=NOTES_CREATED, max_attempts=2, block_ms=50,
                           backoff_base=0.05, backoff_cap=0.2, jitter=0.0)  # fmt: skip
        async def archive_note(event: NoteCreated) -> None:
            if self.broken:
                raise ValueError(f"archive store refused note {event.note_id}")
            self.handled.add(event.note_id)

    async def _run(self, redis_url: str, keys: StreamKeys) -> None:
        settings = ServiceSettings(otel_service_name="browser-test", redis_url=redis_url,
                                   stream_prefix=keys.prefix)  # fmt: skip
        redis = Redis.from_url(redis_url)
        telemetry = setup_telemetry(settings)
        worker = Worker(self.router.routes, redis=redis, keys=keys, consumer="archiver-1",
                        telemetry=telemetry, maintenance_interval=0.2, grace=5)  # fmt: skip
        await worker.ensure_groups()
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        self._started.set()
        await asyncio.to_thread(self._stop.wait)
        stop.set()
        assert await running == 0
        await redis.aclose()

    def __enter__(self) -> "FlakyArchiver":
        self._thread.start()
        until(self._started.is_set, "the worker to start")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


def fresh(read: Callable[[], Any]) -> Any:
    """``read()``, or None when the element it used was replaced meanwhile (retry then)."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        return read()
    except StaleElementReferenceException:
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def console_url(redis_url: str, stream_prefix: str) -> Iterator[str]:
    """The console process's app under uvicorn on a free port, configured as in production."""
    settings = ConsoleSettings(
        redis_url=redis_url,
        stream_prefix=stream_prefix,
        console_tokens=f"sre:{TOKEN}",
        console_cookie_secure=False,
    )
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
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,900"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_an_operator_finds_a_dead_letter_and_redrives_it_after_a_dry_run(
    console_url: str, browser: Any, screenshots: Path, redis_url: str, stream_prefix: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    keys = StreamKeys(stream_prefix)
    redis = SyncRedis.from_url(redis_url)
    notes = [note_created(n) for n in range(3)]

    def dead_letters() -> int:
        return int(redis.xlen(keys.dead_letters(NOTES_CREATED)))

    def shot(name: str) -> None:
        assert browser.save_screenshot(str(screenshots / f"{name}.png"))

    async def publish_notes() -> None:
        client = Redis.from_url(redis_url)
        for note in notes:
            await publish(client, keys, NOTES_CREATED, note)
        await client.aclose()

    try:
        with FlakyArchiver(redis_url, keys) as archiver:
            asyncio.run(publish_notes())
            until(lambda: dead_letters() == 3, "three dead letters")
            archiver.broken = False  # the fix is deployed; the operator redrives

            browser.get(console_url + "/")
            browser.find_element(By.ID, "token").send_keys(TOKEN)
            browser.find_element(By.ID, "login").click()
            # The table body is replaced every 5 s (console.js): each use finds the row afresh.
            row = f'tr[data-stream="{NOTES_CREATED}"][data-group="{GROUP}"]'
            until(lambda: fresh(lambda: browser.find_element(By.CSS_SELECTOR, f"{row} a").text)
                  == "3", "the group's row with its 3 dead letters")  # fmt: skip
            shot("1-queues")

            until(lambda: fresh(lambda: browser.find_element(By.CSS_SELECTOR, f"{row} a").click()
                                or True), "a click on the dead-letter count")  # fmt: skip
            until(lambda: "/dead-letters" in browser.current_url, "the dead letters page")
            Select(browser.find_element(By.ID, "filter-stream")).select_by_value(NOTES_CREATED)
            browser.find_element(By.ID, "filter-error-class").send_keys("ValueError")
            browser.find_element(By.ID, "find").click()
            until(lambda: "error_class=ValueError" in browser.current_url, "the filtered list")
            letters = browser.find_elements(By.CSS_SELECTOR, "a.letter")
            assert len(letters) == 3
            shot("2-dead-letters")

            letters[0].click()
            assert "ValueError" in browser.find_element(By.ID, "error").text
            payload = browser.find_element(By.ID, "payload").text
            [opened] = [n.note_id for n in notes if str(n.note_id) in payload]
            assert browser.find_element(By.ID, "trace-id").text != "none"
            shot("3-dead-letter")

            browser.find_element(By.ID, "dry-run").click()
            assert browser.find_element(By.ID, "would-move").text == "1"
            assert dead_letters() == 3  # a dry run moves nothing
            shot("4-dry-run")

            browser.find_element(By.ID, "redrive").click()
            assert "Redrove 1 of 1" in browser.find_element(By.ID, "redrove").text
            shot("5-redriven")
            until(lambda: archiver.handled == {opened}, "the redriven note handled")
            assert dead_letters() == 2

            browser.get(f"{console_url}/dead-letters?stream={NOTES_CREATED}")
            assert len(browser.find_elements(By.CSS_SELECTOR, "a.letter")) == 2
            browser.find_element(By.ID, "dry-run-all").click()
            assert browser.find_element(By.ID, "would-move").text == "2"
            browser.find_element(By.ID, "redrive").click()
            assert "Redrove 2 of 2" in browser.find_element(By.ID, "redrove").text
            until(lambda: archiver.handled == {n.note_id for n in notes}, "every note handled")
            assert dead_letters() == 0
            audit = redis.xrange(keys.stream("ops.audit.v1"))
            assert [f[b"operator"] for _, f in audit] == [b"sre", b"sre"]
    finally:
        print(f"console screenshots: {screenshots}")
        for key in redis.scan_iter(match=f"*{stream_prefix}*"):
            redis.delete(key)
        redis.close()
