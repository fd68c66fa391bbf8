"""pg_trgm, for `q` on the notes list; its two GIN indexes are built after the revisions.

A case-insensitive regular expression (`~*`, what `q` is matched with) can use a trigram index,
so `q` keeps its literal, case-insensitive substring match without a scan of the owner's notes
(docs/api.md, "Listing, cursors and search").

The indexes (`ix_notes_title_trgm`, `ix_notes_body_trgm`) are not built here: a revision runs in
the migration's one transaction, where only a plain `CREATE INDEX` is allowed, and that holds
writes to `notes` for the whole build. `notes-api migrate` builds them after the revisions with
`CREATE INDEX CONCURRENTLY` (`notes_api.search_indexes`). Databases that ran this revision when it
still built them inside its transaction keep those indexes (valid: nothing is rebuilt).

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
    # The indexes: `notes_api.search_indexes`, concurrently, once the revisions have committed.


def downgrade() -> None:
    # The extension stays: another schema of this database may use it. The indexes go (built
    # by this revision before, or by `notes_api.search_indexes` since).
    for column in _COLUMNS:
        op.execute(f"DROP INDEX IF EXISTS {SCHEMA}.ix_notes_{column}_trgm")
