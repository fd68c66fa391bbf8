"""Process settings read from environment variables only.

Every service subclasses :class:`ServiceSettings` to add its own fields and to set the per-process
defaults of ``OPS_PORT`` and ``OTEL_SERVICE_NAME`` (see ARCHITECTURE.md, "Process conventions").
"""

from __future__ import annotations

import os
import socket
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from servicekit.durability import DurabilityPolicy, DurabilitySetting

LogFormat = Literal["json", "console"]
OtlpProtocol = Literal["http/protobuf", "grpc"]


def default_consumer_name() -> str:
    """Return ``<hostname>-<pid>``, unique per live process on a host."""
    return f"{socket.gethostname()}-{os.getpid()}"


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe to log)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def url_password(url: str) -> str | None:
    """Return the password embedded in ``url``, if any (registered with the log redactor)."""
    return urlsplit(url).password


def asyncpg_url(url: str) -> str:
    """Turn a plain ``postgresql://`` URL into SQLAlchemy's asyncpg form."""
    for scheme in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+asyncpg://" + url[len(scheme) :]
    msg = f"DATABASE_URL must be a postgresql:// URL, got scheme of {redact_url(url)!r}"
    raise ValueError(msg)


class ServiceSettings(BaseSettings):
    """Settings every process shares; field names map to upper-case environment variables."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    otel_service_name: str = Field(default="service", description="service.name resource")
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_ca_cert: str | None = Field(default=None, description="CA bundle path for rediss://")
    database_url: str | None = None
    stream_prefix: str = Field(default="", description="namespaces every Redis key")
    consumer_name: str = Field(default_factory=default_consumer_name)
    log_level: str = "INFO"
    log_format: LogFormat = "json"
    ops_port: int = Field(default=9100, ge=0, le=65535)
    ops_host: str = Field(
        default="0.0.0.0",  # noqa: S104 - scraped from other containers; narrow it outside them
        description="interface of the ops port (127.0.0.1 keeps it on the host)",
    )
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_protocol: OtlpProtocol = "http/protobuf"
    otel_traces_sampler: str = "parentbased_always_on"
    otel_traces_sampler_arg: float | None = None
    shutdown_grace_seconds: float = Field(default=20.0, gt=0)
    outbox_durability: DurabilitySetting = Field(
        default="auto", description="what the outbox relay waits for before marking rows published"
    )
    outbox_durability_replicas: int = Field(default=1, ge=1)
    outbox_durability_timeout_ms: int = Field(default=2000, ge=1, le=9000)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            msg = f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {value!r}"
            raise ValueError(msg)
        return level

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        if not value.startswith(schemes):
            msg = (
                "REDIS_URL must start with redis://, rediss://, unix://, or (a Redis Cluster) "
                "redis+cluster:// or rediss+cluster://"
            )
            raise ValueError(msg)
        return value

    def outbox_durability_policy(self) -> DurabilityPolicy:
        """Return the relay's durability policy (``OUTBOX_DURABILITY`` and its two companions)."""
        return DurabilityPolicy(
            setting=self.outbox_durability,
            replicas=self.outbox_durability_replicas,
            timeout_ms=self.outbox_durability_timeout_ms,
        )

    def secrets(self) -> list[str]:
        """Return the secret values these settings hold, so logging can scrub them."""
        found = [url_password(self.redis_url)]
        if self.database_url:
            found.append(url_password(self.database_url))
        return [s for s in found if s]

    def require_database_url(self) -> str:
        """Return ``DATABASE_URL`` or fail with a message that says what to set."""
        if not self.database_url:
            msg = "DATABASE_URL is not set; set it to a postgresql:// URL"
            raise RuntimeError(msg)
        return self.database_url
