"""Prometheus registry per process.

One ``CollectorRegistry`` per process (not the global default) so tests build several services in
one interpreter without colliding metric names, and each ops server exposes only its own process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "new_registry", "render_metrics"]


def new_registry() -> CollectorRegistry:
    """Create the registry this process's collectors register with."""
    return CollectorRegistry(auto_describe=True)


def render_metrics(registry: CollectorRegistry) -> bytes:
    """Render the registry in the Prometheus text format."""
    return generate_latest(registry)
