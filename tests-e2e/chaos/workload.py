"""A steady stream of API writes and jobs, in background threads while a scenario injects a fault.

Each client thread creates notes and asks archive and copy jobs of some of them, every request
with an Idempotency-Key, and records what it was told into a `History`. Like a real client, it
retries a request with the same key on a network error, a 503 (PostgreSQL away), a 409 (the
first try is still in flight, or its claim has not expired after a crash) or a 429, with backoff,
until it gets an answer or gives up (the request is then *indeterminate*). A 500 is recorded (it
is always a failure, and the scenario asserts there were none) and retried the same way; any
other refusal is final. Pacing between requests is a rate, not a synchronisation: the scenario
judges what was acknowledged, however many requests a slow machine managed.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from types import TracebackType
from uuid import UUID

import httpx

from .checker import COPY_TITLE, NOTE_TITLE, History, JobKind

RETRIED = {409, 429, 500, 502, 503, 504}


class Workload:
    """``clients`` threads, each about ``rate`` notes a second, archiving and copying some."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        clients: int = 3,
        rate: float = 3.0,
        archive_share: float = 0.5,
        copy_share: float = 0.25,
        give_up_after: float = 180.0,
        seed: int = 17,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.clients = clients
        self.interval = 1.0 / rate
        self.archive_share = archive_share
        self.copy_share = copy_share
        self.give_up_after = give_up_after
        self.seed = seed
        self.history = History()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Workload:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        for n in range(self.clients):
            thread = threading.Thread(
                target=self._run, args=(n,), name=f"workload-{n}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, within: float | None = None) -> None:
        """Ask no new requests; wait for the ones under way to get an answer or give up."""
        self._stop.set()
        within = within or self.give_up_after + 60
        deadline = time.monotonic() + within
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"workload threads still running after {within} s: {alive}"
        assert not self.failures, f"workload clients failed: {self.failures}"

    def wait_for_acknowledged(self, at_least: int, within: float) -> None:
        """Until at least ``at_least`` requests were acknowledged (the load is under way)."""
        deadline = time.monotonic() + within
        while self.history.acknowledged < at_least:
            assert time.monotonic() < deadline, (
                f"not within {within} s: {at_least} acknowledged requests; saw "
                f"{self.history.acknowledged}, statuses {dict(self.history.statuses)}, "
                f"errors {dict(self.history.errors)}"
            )
            time.sleep(0.1)

    # ---- one client ------------------------------------------------------------------------------

    def _run(self, n: int) -> None:
        chance = random.Random(self.seed + n)
        headers = {"Authorization": f"Bearer {self.api_key}"}
        try:
            with httpx.Client(base_url=self.base_url, headers=headers, timeout=10) as client:
                for i in itertools.count():
                    if self._stop.is_set():
                        return
                    started = time.monotonic()
                    self._one_round(client, chance, f"w{n}-{i}")
                    self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        except Exception as exc:  # a bug in the workload must fail the scenario, not hang it
            self.failures.append(f"client {n}: {type(exc).__name__}: {exc}")

    def _one_round(self, client: httpx.Client, chance: random.Random, token: str) -> None:
        body = {
            "title": NOTE_TITLE.format(token=token),
            "body": "chaos workload",
            "tags": ["chaos"],
        }
        answer = self._call(client, token, "note", "/v1/notes", body)
        if answer is None or answer.status_code != 201:
            return
        note_id = UUID(answer.json()["id"])
        self.history.note_created(token, note_id)
        if chance.random() < self.archive_share:
            self._job(client, f"{token}-a", "archive", note_id, None)
        if chance.random() < self.copy_share:
            copy_token = f"{token}-c"
            self._job(
                client, copy_token, "copy", note_id, {"title": COPY_TITLE.format(token=copy_token)}
            )

    def _job(
        self,
        client: httpx.Client,
        token: str,
        kind: JobKind,
        note_id: UUID,
        body: dict[str, str] | None,
    ) -> None:
        self.history.asked_job(token, kind, note_id)
        answer = self._call(client, token, kind, f"/v1/notes/{note_id}/{kind}", body)
        if answer is not None and answer.status_code == 202:
            self.history.job_accepted(token, UUID(answer.json()["job_id"]))

    def _call(
        self, client: httpx.Client, token: str, kind: str, path: str, body: dict[str, object] | None
    ) -> httpx.Response | None:
        """POST with the token as Idempotency-Key until answered; None if it gave up."""
        deadline = time.monotonic() + self.give_up_after
        for attempt in itertools.count():
            try:
                answer = client.post(path, json=body, headers={"Idempotency-Key": token})
            except httpx.TransportError as exc:
                self.history.attempted(None, type(exc).__name__)
            else:
                self.history.attempted(answer.status_code)
                if answer.status_code not in RETRIED:
                    if answer.status_code >= 300:
                        self.history.was_refused(token, answer.status_code)
                    return answer
            if time.monotonic() > deadline:
                self.history.gave_up(token, kind)
                return None
            time.sleep(min(2.0, 0.05 * 2**attempt))  # backoff before the retry, as a client would
        raise AssertionError("unreachable")
