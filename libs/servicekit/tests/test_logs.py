"""Logging: one JSON shape for structlog and stdlib records, and secrets never written."""

import io
import json
import logging
import re

from opentelemetry.sdk.trace import TracerProvider

from servicekit import ServiceSettings, get_logger, setup_telemetry

SENTINEL_PASSWORD = "s3ntinel-redis-pass"
SENTINEL_DB_PASSWORD = "s3ntinel-db-pass"
SENTINEL_API_KEY = "npk_s3ntinelapikey0123456789"


def configured() -> tuple[io.StringIO, ServiceSettings]:
    out = io.StringIO()
    settings = ServiceSettings(
        otel_service_name="log-test",
        redis_url=f"redis://:{SENTINEL_PASSWORD}@127.0.0.1:6379/0",
        database_url=f"postgresql://app:{SENTINEL_DB_PASSWORD}@127.0.0.1/app",
    )
    setup_telemetry(settings, log_stream=out)
    return out, settings


def json_lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_secrets_never_appear_in_any_log_line() -> None:
    out, settings = configured()
    log = get_logger("test")
    log.info("settings.loaded", redis_url=settings.redis_url, database_url=settings.database_url)
    log.info("request.received", headers={"Authorization": f"Bearer {SENTINEL_API_KEY}"})
    log.info("key.created", api_key=SENTINEL_API_KEY)
    log.info(
        "free.text", detail=f"connecting with Bearer {SENTINEL_API_KEY} to {settings.redis_url}"
    )
    logging.getLogger("uvicorn.error").warning("stdlib says %s", settings.database_url)
    try:
        raise RuntimeError(f"cannot connect to {settings.database_url}")
    except RuntimeError:
        log.exception("connect.failed")
    text = out.getvalue()
    assert len(json_lines(out)) == 6
    for sentinel in (SENTINEL_PASSWORD, SENTINEL_DB_PASSWORD, SENTINEL_API_KEY):
        assert sentinel not in text
    assert "***" in text


def test_every_line_is_json_with_service_and_trace_ids() -> None:
    out, _ = configured()
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        get_logger("test").info("inside.span", n=1)
        logging.getLogger("faststream").info("library line")
    get_logger("test").info("outside.span")
    inside, library, outside = json_lines(out)
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert inside["trace_id"] == trace_id
    assert library["trace_id"] == trace_id
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert outside["trace_id"] is None
    assert {line["service"] for line in (inside, library, outside)} == {"log-test"}
    assert inside["event"] == "inside.span"
    assert inside["level"] == "info"


def test_log_level_filters_lower_levels() -> None:
    out = io.StringIO()
    setup_telemetry(ServiceSettings(log_level="warning"), log_stream=out)
    get_logger("test").info("hidden")
    get_logger("test").warning("shown")
    assert [line["event"] for line in json_lines(out)] == ["shown"]


def test_a_registered_token_shape_is_masked_in_every_field_and_traceback() -> None:
    out = io.StringIO()
    redactor = setup_telemetry(ServiceSettings(), log_stream=out).redactor
    redactor.add_shape(re.compile(r"zz_[A-Za-z0-9_-]{16,}"), hint="zz_")
    token = "zz_" + "Q" * 43
    log = get_logger("test")
    log.info("http.request_completed", path=f"/v1/notes/{token}", nested={"a": [token]})
    try:
        raise ValueError(f"bad id {token}")
    except ValueError:
        log.exception("request.failed")
    logging.getLogger("uvicorn.error").warning("stdlib %s", token)
    text = out.getvalue()
    assert len(json_lines(out)) == 3
    assert token not in text
    assert "zz_***" in text
    assert "zz_short" in redactor.scrub_text("zz_short")  # too short for the shape: kept
