"""Settings of the HTTP process and of the worker, from the environment only."""

from typing import Annotated

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from servicekit import ServiceSettings

SCHEMA = "notes"
"""The PostgreSQL schema notes-api owns (notes, API keys, idempotency records, jobs, outbox)."""


class NotesApiSettings(ServiceSettings):
    otel_service_name: str = "notes-api"
    ops_port: int = Field(default=9100, ge=0, le=65535)
    host: str = "0.0.0.0"  # noqa: S104 - the API is served to other containers
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, ge=1)
    idempotency_ttl_hours: float = Field(default=24.0, ge=24.0)
    idempotency_lock_seconds: float = Field(default=60.0, gt=0)
    """An in-flight Idempotency-Key older than this is taken over (its request died)."""
    delay_horizon_days: int = Field(default=30, ge=1)
    """How far ahead `run_at` may be; later is rejected with 422."""
    retry_after_seconds: int = Field(default=2, ge=1)
    database_timeout_seconds: float = Field(default=2.0, gt=0)
    database_pool_size: int = Field(default=20, ge=1)
    """Connections each serve process opens at most and keeps open (a wider burst waits for one)."""
    serve_processes: int = Field(default=1, ge=1, le=32)
    """`notes-api serve` runs this many servers on one socket, supervised (notes_api.processes);
    each has its own pool and its ops port is `OPS_PORT + i`."""
    # rate limits (issue 12)
    rate_limits_enabled: bool = True
    """Per-key token buckets in Redis (docs/api.md, "Rate limits")."""
    rate_limit_reads_per_second: float = Field(default=100.0, gt=0)
    rate_limit_reads_burst: int = Field(default=200, ge=1)
    rate_limit_writes_per_second: float = Field(default=50.0, gt=0)
    rate_limit_writes_burst: int = Field(default=100, ge=1)
    rate_limit_bulk_per_second: float = Field(default=0.1, gt=0)
    rate_limit_bulk_burst: int = Field(default=5, ge=1)
    rate_limit_redis_timeout_seconds: float = Field(default=0.25, gt=0)
    """How long a request waits for Redis's decision before the local bucket decides."""
    # connection limits (issue 12)
    http_receive_timeout_seconds: float = Field(default=10.0, gt=0)
    """A whole request must arrive within this, from connection open or its first byte."""
    http_write_timeout_seconds: float = Field(default=30.0, gt=0)
    """A response the client does not read must make progress within this, or it is dropped."""
    http_keepalive_timeout_seconds: int = Field(default=5, ge=1)
    """An idle keep-alive connection is closed after this."""
    http_max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    """Request line plus headers; larger is answered 431."""
    http_max_connections: int | None = Field(default=None, ge=1)
    """Open connections per serve process; by default the descriptor limit less the reserve."""
    http_descriptor_reserve: int = Field(default=128, ge=0)
    """Descriptors kept for the database pool, Redis, the ops port and files."""

    # bulk archive (issue 12)
    bulk_archive_max_items: int = Field(default=50_000, ge=1)
    """The most notes one `POST /v1/notes:bulk-archive` resolves (more → 422); the scheduled
    auto-archive splits a larger run into parents of at most this many."""

    # cursors and search (issue 12)
    cursor_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """`CURSOR_SECRETS`: comma-separated, at least 32 characters each; the first signs cursors,
    every one verifies them (rotation). Unset: a key derived from `DATABASE_URL`."""
    list_page_max_bytes: int = Field(default=1024 * 1024, ge=1)
    """A list page stops adding notes once their JSON passes this size (at least one is sent)."""

    # operator endpoint (issue 19)
    operator_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    """`OPERATOR_TOKENS`: comma-separated, at least 32 characters each; a bearer of one reads
    `/v1/operator/...` (any owner's jobs, read-only). Unset: that endpoint answers 401 to all.
    Never a notes API key (the operations console holds one to look jobs up)."""

    @field_validator("cursor_secrets", "operator_tokens", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cursor_secrets", "operator_tokens")
    @classmethod
    def _long_enough(cls, value: list[SecretStr], info: ValidationInfo) -> list[SecretStr]:
        if any(len(secret.get_secret_value()) < 32 for secret in value):
            name = str(info.field_name).upper()
            raise ValueError(f"each of {name} must be at least 32 characters")
        return value

    def secrets(self) -> list[str]:
        """The shared secrets, the cursor secrets and the operator tokens, for the log redactor."""
        own = [*self.cursor_secrets, *self.operator_tokens]
        return [*super().secrets(), *(s.get_secret_value() for s in own)]


class WorkerSettings(NotesApiSettings):
    otel_service_name: str = "notes-api-worker"
    ops_port: int = Field(default=9101, ge=0, le=65535)
    relay_poll_seconds: float = Field(default=0.2, gt=0)
    job_retention_days: float = Field(default=30.0, gt=0)
    """How long a finished job (and its children and bulk chunks) is kept before it is purged."""
    job_stale_after_seconds: float = Field(default=3600.0, gt=0)
    """A non-final job not updated for this long is checked against the runtime (reconciler)."""
    job_reconcile_every_seconds: float = Field(default=300.0, gt=0)
    """How often the reconciler looks for stale jobs."""
    job_progress_every_seconds: float = Field(default=0.25, gt=0)
    """How often bulk parents' progress is counted from their children (one event per round)."""
    job_progress_sweep_seconds: float = Field(default=30.0, gt=0)
    """How often every unfinished bulk parent is counted, not only those with new results."""
