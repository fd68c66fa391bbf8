"""Settings of the HTTP process and of the worker, from the environment only."""

from pydantic import Field

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
