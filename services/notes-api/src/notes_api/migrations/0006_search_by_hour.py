"""btree_gin and `notes.created_hour`: the search indexes also key each note by its creation hour.

A term common in old notes but absent from the newest ones made `q`'s phase 2 recheck every one
of its matches to find the newest 21 (the trigram index gives no order, and PostgreSQL would not
intersect it with the `created_at` index). Keyed by `(created_hour(created_at), column
gin_trgm_ops)`, one GIN scan intersects a range of hours with the term's trigrams before the
heap, so phase 2 reads growing windows of hours, newest first, and rechecks only the matches of
the windows it reads (`notes_api.search`).

- btree_gin gives GIN the `bigint` operator class; a trusted extension (PostgreSQL 13+), created
  in `public` unless installed elsewhere, like pg_trgm in revision 0005.
- `notes.created_hour(timestamptz)`: whole hours since the epoch. Immutable (an index expression
  must be): the epoch of a `timestamptz` does not depend on the session's time zone.

The indexes themselves are built after the revisions, concurrently (`notes_api.search_indexes`,
which also drops revision 0005's single-column ones once these are valid).

Revision ID: 0006
Revises: 0005
"""

from alembic import op
from sqlalchemy import text

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMA = "notes"  # fixed here (and in the function's name): a migration must not change


def upgrade() -> None:
    bind = op.get_bind()
    installed = bind.execute(
        text("SELECT 1 FROM pg_extension WHERE extname = 'btree_gin'")
    ).scalar()
    if installed is None:
        bind.execute(text("CREATE EXTENSION IF NOT EXISTS btree_gin WITH SCHEMA public"))
    op.execute(
        "CREATE OR REPLACE FUNCTION notes.created_hour(at timestamptz) RETURNS bigint "
        "LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT "
        "AS $$ SELECT floor(extract(epoch FROM at) / 3600)::bigint $$"
    )


def downgrade() -> None:
    # The extension stays (another schema may use it); the indexes on the function go with it.
    op.execute(f"DROP INDEX IF EXISTS {SCHEMA}.ix_notes_title_hour_trgm")
    op.execute(f"DROP INDEX IF EXISTS {SCHEMA}.ix_notes_body_hour_trgm")
    op.execute(f"DROP FUNCTION IF EXISTS {SCHEMA}.created_hour(timestamptz)")
