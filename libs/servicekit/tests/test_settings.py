"""Settings come from the environment only, with clear errors for bad values."""

import pytest
from pydantic import ValidationError

from servicekit import ServiceSettings
from servicekit.settings import asyncpg_url, redact_url


def test_settings_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://cache:6380/1")
    monkeypatch.setenv("REDIS_CA_CERT", "/etc/ca.pem")
    monkeypatch.setenv("STREAM_PREFIX", "staging:")
    monkeypatch.setenv("OPS_PORT", "9102")
    monkeypatch.setenv("LOG_FORMAT", "console")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    settings = ServiceSettings()
    assert settings.redis_url == "rediss://cache:6380/1"
    assert settings.redis_ca_cert == "/etc/ca.pem"
    assert settings.stream_prefix == "staging:"
    assert settings.ops_port == 9102
    assert settings.log_format == "console"
    assert settings.otel_exporter_otlp_protocol == "grpc"


def test_consumer_name_defaults_to_host_and_pid() -> None:
    import os

    assert ServiceSettings().consumer_name.endswith(f"-{os.getpid()}")


@pytest.mark.parametrize(
    ("variable", "value"),
    [("LOG_LEVEL", "loud"), ("REDIS_URL", "http://x"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")],
)
def test_bad_values_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.lower()):
        ServiceSettings()


def test_urls_are_redacted_and_converted() -> None:
    assert redact_url("postgresql://app:pw@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert asyncpg_url("postgresql://u@h/d") == "postgresql+asyncpg://u@h/d"
    with pytest.raises(ValueError, match="postgresql://"):
        asyncpg_url("mysql://u:secret@h/d")


def test_missing_database_url_says_what_to_set() -> None:
    with pytest.raises(RuntimeError, match="DATABASE_URL"):
        ServiceSettings(database_url=None).require_database_url()


def test_outbox_durability_defaults_to_auto_and_reads_its_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ServiceSettings().outbox_durability_policy().setting == "auto"
    monkeypatch.setenv("OUTBOX_DURABILITY", "replicas")
    monkeypatch.setenv("OUTBOX_DURABILITY_REPLICAS", "2")
    monkeypatch.setenv("OUTBOX_DURABILITY_TIMEOUT_MS", "500")
    policy = ServiceSettings().outbox_durability_policy()
    assert (policy.setting, policy.replicas, policy.timeout_ms) == ("replicas", 2, 500)


def test_an_unknown_outbox_durability_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OUTBOX_DURABILITY", "always")
    with pytest.raises(ValidationError, match="outbox_durability"):
        ServiceSettings()
