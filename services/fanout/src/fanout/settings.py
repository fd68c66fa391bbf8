"""fanout's settings: the shared ones, with this process's defaults (ARCHITECTURE.md)."""

from pydantic import Field

from contracts import Service
from fanout.tables import SCHEMA
from servicekit import ServiceSettings


class FanoutSettings(ServiceSettings):
    otel_service_name: str = str(Service.FANOUT)
    ops_port: int = Field(default=9104, ge=0, le=65535)
    database_schema: str = SCHEMA
    relay_batch_size: int = Field(default=1000, ge=1)
    """Outbox rows (child jobs) the relay publishes in one pipeline: a chunk's worth at a time."""
    relay_poll_seconds: float = Field(default=0.05, gt=0)
    """The relay's pause after a round with less than a full batch."""
