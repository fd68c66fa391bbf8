"""The scheduler's settings: the shared ones, with this process's defaults (ARCHITECTURE.md)."""

from pydantic import Field

from contracts import Service
from servicekit import ServiceSettings


class SchedulerSettings(ServiceSettings):
    otel_service_name: str = str(Service.SCHEDULER)
    ops_port: int = Field(default=9103, ge=0, le=65535)
    schedules_file: str | None = Field(
        default=None, description="the schedules (TOML); unset: the file shipped in the package"
    )
    late_after_seconds: float = Field(
        default=5.0, gt=0, description="a tick fired later than this is recorded late"
    )
    running_timeout_seconds: float = Field(
        default=3600.0, gt=0,
        description="overlap=skip: a run with no completion event after this counts as finished",
    )  # fmt: skip
    delayed_poll_seconds: float = Field(default=0.1, gt=0, le=5)
