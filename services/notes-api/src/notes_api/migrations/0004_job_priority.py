"""Jobs carry the priority they were submitted at (critical, default or low); bulk archive indexes.

- `jobs.priority`: every job written before this revision was submitted at `default`.
- `ix_notes_owner_unarchived` (owner_id, id) over unarchived notes: a bulk archive walks an owner's
  unarchived notes in id order, a page (one chunk) at a time; without it each page would re-read
  and sort every note of the owner.
- `ix_jobs_bulk_unfinished` (owner_id) over bulk parents not finished: a bulk archive leaves out
  the notes those parents' chunks carry, and looks them up per owner at every request.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "notes"  # fixed here: a migration must not change when the code's constant does


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("priority", sa.Text, nullable=False, server_default="default"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_notes_owner_unarchived", "notes", ["owner_id", "id"], schema=SCHEMA,
        postgresql_where=sa.text("archived_at IS NULL"),
    )  # fmt: skip
    op.create_index(
        "ix_jobs_bulk_unfinished", "jobs", ["owner_id"], schema=SCHEMA,
        postgresql_where=sa.text(
            "type = 'bulk_archive' AND status IN ('accepted', 'scheduled', 'running', 'retrying')"
        ),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_jobs_bulk_unfinished", "jobs", schema=SCHEMA)
    op.drop_index("ix_notes_owner_unarchived", "notes", schema=SCHEMA)
    op.drop_column("jobs", "priority", schema=SCHEMA)
