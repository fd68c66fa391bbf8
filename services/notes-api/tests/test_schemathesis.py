"""A schemathesis run over the OpenAPI document against the served app: no 5xx, no violations.

`positive_data_acceptance` is excluded: schema-valid requests are rejected on purpose where a rule
depends on state (a stale If-Match → 412, an unknown cursor → 400, run_at past the horizon → 422);
those rules have their own tests. Every other check runs, server errors and response schemas
included.
"""

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from notes_api.app import create_app
from notes_api.auth import create_key
from notes_api.settings import NotesApiSettings
from servicekit import create_database_engine, setup_telemetry


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served(notes_database_url: str) -> Iterator[tuple[str, str]]:
    config = NotesApiSettings(database_url=notes_database_url, ops_port=0, log_level="WARNING",
                              log_format="console", port=_free_port())  # fmt: skip

    async def new_key() -> str:
        engine = create_database_engine(config)
        try:
            return (await create_key(engine, "fuzzer"))[1]
        finally:
            await engine.dispose()

    key = asyncio.run(new_key())
    app = create_app(config, setup_telemetry(config))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=config.port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{config.port}"
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield base, key
    server.should_exit = True
    thread.join(10)


def test_schemathesis_finds_no_5xx_and_no_schema_violations(served: tuple[str, str]) -> None:
    base, key = served
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    headers = {"Authorization": f"Bearer {key}"}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            # Random keys reused with random bodies are 422 by design (tested in
            # test_idempotency); the fuzzer explores the rest of each request.
            if case.headers:
                case.headers.pop("Idempotency-Key", None)
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report all
            failures.append(f"{operation.label}: {exc}")
    assert httpx.get(f"{base}/openapi.json").status_code == 200
    assert not failures, "\n\n".join(failures)
