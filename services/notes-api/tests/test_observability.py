import io
import json
import re

import httpx
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from sqlalchemy.ext.asyncio import AsyncEngine

from notes_api.app import create_app
from notes_api.auth import create_key
from notes_api.settings import NotesApiSettings
from servicekit import setup_telemetry


async def test_requests_get_http_and_sql_spans_red_metrics_by_route_and_a_keyless_access_log(
    settings: NotesApiSettings, engine_direct: AsyncEngine
) -> None:
    _, key = await create_key(engine_direct, "alice")
    spans, logs = InMemorySpanExporter(), io.StringIO()
    telemetry = setup_telemetry(
        settings.model_copy(update={"log_level": "INFO"}),
        span_processors=[SimpleSpanProcessor(spans)],
        log_stream=logs,
    )
    app = create_app(settings, telemetry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            headers = {"Authorization": f"Bearer {key}"}
            note = (await client.post("/v1/notes", json={"title": "t"}, headers=headers)).json()
            await client.get(f"/v1/notes/{note['id']}", headers=headers)
    names = [span.name for span in spans.get_finished_spans()]
    assert "POST /v1/notes" in names
    assert any(name.startswith("INSERT") for name in names), names
    sample = telemetry.registry.get_sample_value(
        "http_requests_total", {"method": "GET", "route": "/v1/notes/{note_id}", "status": "200"}
    )
    assert sample == 1.0
    # The latency histogram links to traces: each observation carries its trace id as exemplar.
    exposition = generate_openmetrics(telemetry.registry).decode()
    traces = {format(span.context.trace_id, "032x") for span in spans.get_finished_spans()}
    exemplars = re.findall(
        r'http_request_duration_seconds_bucket\{[^}]*\} \S+ # \{trace_id="(\w+)"\}', exposition
    )
    assert exemplars
    assert set(exemplars) <= traces
    output = logs.getvalue()
    assert "http.request_completed" in output
    assert key not in output
    assert note["id"] not in output.split("route=")[-1] or "/v1/notes/{note_id}" in output


async def test_a_key_pasted_into_a_url_path_is_masked_in_the_access_log(
    settings: NotesApiSettings, engine_direct: AsyncEngine
) -> None:
    _, key = await create_key(engine_direct, "alice")
    logs = io.StringIO()
    telemetry = setup_telemetry(settings.model_copy(update={"log_level": "INFO"}), log_stream=logs)
    app = create_app(settings, telemetry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get(f"/v1/notes/{key}", headers={"Authorization": key})
            assert response.status_code == 401
    output = logs.getvalue()
    assert "http.request_completed" in output
    assert key not in output
    assert "/v1/notes/nk_***" in output


async def test_every_response_and_its_log_lines_carry_a_request_id_taken_from_a_well_formed_one(
    settings: NotesApiSettings, engine_direct: AsyncEngine
) -> None:
    _, key = await create_key(engine_direct, "alice")
    logs = io.StringIO()
    telemetry = setup_telemetry(
        settings.model_copy(update={"log_level": "INFO", "log_format": "json"}), log_stream=logs
    )
    app = create_app(settings, telemetry)
    alice = {"Authorization": f"Bearer {key}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            given = await client.get("/v1/notes", headers={**alice, "X-Request-ID": "abc.DEF-1_2"})
            generated = await client.get("/v1/notes", headers=alice)
            replaced = [
                await client.get("/v1/notes", headers={**alice, "X-Request-ID": bad})
                for bad in ("has space", "x" * 129, "semi;colon")
            ]
            unauthorized = await client.get("/v1/notes", headers={"X-Request-ID": "support-42"})
    assert given.headers["x-request-id"] == "abc.DEF-1_2"
    ids = [generated.headers["x-request-id"], *(r.headers["x-request-id"] for r in replaced)]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,128}", i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    assert unauthorized.status_code == 401
    assert unauthorized.headers["x-request-id"] == "support-42"
    assert unauthorized.json()["request_id"] == "support-42"
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    completed = [line for line in lines if line["event"] == "http.request_completed"]
    assert [line["request_id"] for line in completed] == ["abc.DEF-1_2", *ids, "support-42"]
    assert all("trace_id" in line for line in completed)
