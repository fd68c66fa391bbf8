"""servicekit: the cross-cutting machinery every notes-platform service is built from.

Settings, structured logging, tracing, metrics, the ops endpoint, the FastStream broker and (in
:mod:`servicekit.jobs`) the reliable job runtime. It knows no service.
"""

from typing import TYPE_CHECKING, Any

from servicekit.connections import create_database_engine, create_redis, redis_ssl_context
from servicekit.dedupe import RedisDedupe
from servicekit.errors import ErrorKind, PermanentError, SkipJob, TransientError, classify
from servicekit.headers import event_headers
from servicekit.keys import StreamKeys
from servicekit.lifecycle import event_loop_factory, run_until_stopped
from servicekit.logs import configure_logging, get_logger
from servicekit.ops import OpsServer, Readiness, ReadinessCheck
from servicekit.outbox import OutboxRelay, add_to_outbox, create_outbox_tables, ensure_outbox_tables
from servicekit.retention import database_retention
from servicekit.runner import database_check, redis_check, run_worker
from servicekit.settings import ServiceSettings, asyncpg_url, redact_url
from servicekit.telemetry import Telemetry, setup_telemetry
from servicekit.transactional import HandlerTransaction, handler_transaction
from servicekit.wire import decode_envelope, encode_envelope

if TYPE_CHECKING:
    from servicekit.broker import JSONMessageFormat, create_broker, publish_event

# FastStream costs a process start about half a second of CPU, and no service's start-up path uses
# it: these names load servicekit.broker on first use (PEP 562).
_FROM_BROKER = {"JSONMessageFormat", "create_broker", "publish_event"}


def __getattr__(name: str) -> Any:
    if name in _FROM_BROKER:
        from servicekit import broker

        return getattr(broker, name)
    msg = f"module 'servicekit' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "ErrorKind",
    "HandlerTransaction",
    "JSONMessageFormat",
    "OpsServer",
    "OutboxRelay",
    "PermanentError",
    "Readiness",
    "ReadinessCheck",
    "RedisDedupe",
    "ServiceSettings",
    "SkipJob",
    "StreamKeys",
    "Telemetry",
    "TransientError",
    "add_to_outbox",
    "asyncpg_url",
    "classify",
    "configure_logging",
    "create_broker",
    "create_database_engine",
    "create_outbox_tables",
    "create_redis",
    "database_check",
    "database_retention",
    "decode_envelope",
    "encode_envelope",
    "ensure_outbox_tables",
    "event_headers",
    "event_loop_factory",
    "get_logger",
    "handler_transaction",
    "publish_event",
    "redact_url",
    "redis_check",
    "redis_ssl_context",
    "run_until_stopped",
    "run_worker",
    "setup_telemetry",
]
