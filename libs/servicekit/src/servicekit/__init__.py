"""servicekit: the cross-cutting machinery every notes-platform service is built from.

The names here are what a service's ``app.py``, ``settings.py``, ``store.py`` and ``handlers.py``
use; ``tests/test_public_surface.py`` lists them, so an addition is a decision. The rest is
reached by module, each with one job:

- :mod:`servicekit.jobs`: declaring routes (``JobRouter``), publishing and enqueueing;
- :mod:`servicekit.migrations`: a service's ``migrate`` command;
- :mod:`servicekit.testing`: pytest fixtures and ``assert_routes_declared``;
- :mod:`servicekit.operations`: dead letters and paused groups, for operator tools;
- :mod:`servicekit.asyncapi`: each process's AsyncAPI document (FastStream, loaded on demand);
- :mod:`servicekit.broker`: a FastStream broker for in-memory wiring tests (``TestRedisBroker``).

It knows no service.
"""

from servicekit.connections import create_database_engine, create_redis
from servicekit.errors import PermanentError, SkipJob, TransientError
from servicekit.keys import StreamKeys
from servicekit.lifecycle import run_until_stopped
from servicekit.logs import get_logger
from servicekit.ops import OpsServer, Readiness
from servicekit.outbox import (
    OutboxRelay,
    add_all_to_outbox,
    add_each_to_outbox,
    add_to_outbox,
    create_outbox_tables,
)
from servicekit.redis_client import RedisClient
from servicekit.retention import database_retention
from servicekit.runner import BackgroundLoop, database_check, redis_check, run_worker
from servicekit.settings import ServiceSettings
from servicekit.telemetry import Telemetry, setup_telemetry
from servicekit.transactional import (
    BatchTransaction,
    HandlerTransaction,
    handler_transaction,
    handler_transaction_batch,
)

__all__ = [
    "BackgroundLoop",
    "BatchTransaction",
    "HandlerTransaction",
    "OpsServer",
    "OutboxRelay",
    "PermanentError",
    "Readiness",
    "RedisClient",
    "ServiceSettings",
    "SkipJob",
    "StreamKeys",
    "Telemetry",
    "TransientError",
    "add_all_to_outbox",
    "add_each_to_outbox",
    "add_to_outbox",
    "create_database_engine",
    "create_outbox_tables",
    "create_redis",
    "database_check",
    "database_retention",
    "get_logger",
    "handler_transaction",
    "handler_transaction_batch",
    "redis_check",
    "run_until_stopped",
    "run_worker",
    "setup_telemetry",
]
