"""Every schema with an inbox is purged by some running process of the platform.

Generic over services: the schemas are found in the database (every one with servicekit's
`inbox`), not listed here, so a new service whose processes forget `database_retention` fails
this test as soon as the harness migrates and starts it. Purging runs as a process starts (then
hourly), so this test seeds a migrated platform of its own before starting its processes.
"""

from pathlib import Path

from harness import poll, private_platform

EXPIRED = "now() - interval '30 days'"  # past every default retention period
_SEED = (
    "INSERT INTO {schema}.inbox (consumer_group, event_id, processed_at)"
    f" VALUES ('e2e-old', gen_random_uuid(), {EXPIRED}), ('e2e-new', gen_random_uuid(), now())",
    "INSERT INTO {schema}.outbox"
    " (aggregate_id, stream, event_id, event_type, payload, headers, created_at, published_at)"
    " VALUES ('e2e', 'e2e.v1', gen_random_uuid(), 'e2e.v1', jsonb_build_object(),"
    f" jsonb_build_object(), {EXPIRED}, {EXPIRED})",
)
_LEFT = (
    "SELECT (SELECT count(*) FROM {schema}.inbox WHERE consumer_group = 'e2e-old')"
    " + (SELECT count(*) FROM {schema}.outbox WHERE stream = 'e2e.v1') AS expired,"
    " (SELECT count(*) FROM {schema}.inbox WHERE consumer_group = 'e2e-new') AS recent"
)


def test_every_schema_with_an_inbox_has_its_expired_rows_purged_by_a_running_process(
    tmp_path: Path,
) -> None:
    with private_platform(tmp_path, start=False) as platform:
        found = platform.rows(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'inbox'"
        )
        schemas = sorted(row["table_schema"] for row in found)
        assert {"notes", "archiver"} <= set(schemas)
        for schema in schemas:
            for statement in _SEED:
                platform.sql(statement.format(schema=schema))

        platform.start_all()  # every process only now

        def left() -> dict[str, tuple[int, int]]:
            counts = {s: platform.rows(_LEFT.format(schema=s))[0] for s in schemas}
            return {s: (row["expired"], row["recent"]) for s, row in counts.items()}

        poll(lambda: all(expired == 0 for expired, _ in left().values()), 60,
             "expired inbox/outbox rows purged in every schema",
             seen=lambda: f"(expired, recent) per schema {left()}")  # fmt: skip
        assert all(recent == 1 for _, recent in left().values())  # recent rows stay
        codes = platform.close()
        assert codes == dict.fromkeys(codes, 0), codes
