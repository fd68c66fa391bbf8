"""servicekit's public names, listed: adding or removing one is a decision made here, in review.

The root exports what a service's app.py, settings.py, store.py and handlers.py use; servicekit.jobs
what routes, publishing and job inspection need; servicekit.operations what operator tools use.
import-linter keeps services off the runtime's internals (``servicekit.jobs._*``).
"""

import importlib

import pytest

SURFACE = {
    "servicekit": [
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
    ],
    "servicekit.jobs": [
        "EXIT_GROUP_LOST",
        "GroupLostError",
        "HeldEntry",
        "Holding",
        "JobOptions",
        "JobRouter",
        "RetentionPolicy",
        "Route",
        "WeightedStream",
        "Worker",
        "dead_lettered_entries",
        "enqueue",
        "locate_jobs",
        "pending_entries",
        "publish",
        "unread_entries",
    ],
    "servicekit.operations": [
        "AUDIT_STREAM",
        "ConsumerStatus",
        "DeadLetter",
        "DeadLetterFilter",
        "GroupStatus",
        "Redrive",
        "StreamEntry",
        "find_dead_letters",
        "group_status",
        "inspect_dead_letter",
        "list_dead_letters",
        "pause_group",
        "prune_consumers",
        "purge",
        "purge_dead_letters",
        "recent_entries",
        "record_audit",
        "redrive",
        "redrive_dead_letters",
        "resume_group",
    ],
}


@pytest.mark.parametrize("module_name", sorted(SURFACE))
def test_the_public_names_are_the_listed_ones(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == SURFACE[module_name]
    assert all(getattr(module, name, None) is not None for name in module.__all__)


def test_the_root_exports_only_the_listed_names() -> None:
    import servicekit

    public = {name for name in vars(servicekit) if not name.startswith("_")}
    submodules = {name for name in public if type(getattr(servicekit, name)).__name__ == "module"}
    assert public - submodules == set(SURFACE["servicekit"])
