"""The archiver's settings: the shared ones, with this process's defaults (ARCHITECTURE.md)."""

from pydantic import Field

from archiver.tables import SCHEMA
from contracts import Service
from servicekit import ServiceSettings


class ArchiverSettings(ServiceSettings):
    otel_service_name: str = str(Service.ARCHIVER)
    ops_port: int = Field(default=9102, ge=0, le=65535)
    database_schema: str = SCHEMA
