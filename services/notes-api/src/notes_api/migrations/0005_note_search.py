"""Trigram indexes for `q` on the notes list: a GIN (pg_trgm) index on title and one on body.

`ILIKE '%...%'` can use a trigram index, so `q` keeps its literal, case-insensitive substring
match without a scan of the owner's notes (docs/api.md, "Listing, cursors and search").

pg_trgm is a trusted extension (PostgreSQL 13+): the database's owner may create it without
being a superuser. An extension belongs to the whole database, not to schema `notes`, so it goes
where extensions usually live (`public`) unless it is already installed elsewhere; the indexes
name its operator class in whichever schema holds it, so they do not depend on `search_path`.

Revision ID: 0005
Revises: 0004
"""

from alembic import op
from sqlalchemy import text

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = "notes"  # fixed here: a migration must not change when the code's constant does
_COLUMNS = ("title", "body")


def upgrade() -> None:
    bind = op.get_bind()
    installed = bind.execute(
        text("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'")
    ).scalar()
    if installed is None:
        bind.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public"))
        installed = "public"
    for column in _COLUMNS:
        # Built in the migration's transaction (not CONCURRENTLY): it holds a write lock on
        # notes while it builds, about a second per 100k notes of 1 KB.
        op.execute(
            f"CREATE INDEX IF NOT EXISTS ix_notes_{column}_trgm ON {SCHEMA}.notes "
            f"USING gin ({column} {installed}.gin_trgm_ops)"
        )


def downgrade() -> None:
    # The extension stays: another schema of this database may use it.
    for column in _COLUMNS:
        op.execute(f"DROP INDEX IF EXISTS {SCHEMA}.ix_notes_{column}_trgm")
