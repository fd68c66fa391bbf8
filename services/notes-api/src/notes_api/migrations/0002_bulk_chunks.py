"""Bulk archive chunks: which notes each chunk of a parent carries, and whether it was lost.

A chunk that is dead-lettered (or fails) never expands into child jobs; the worker then counts
its items as failed on the parent, each item once, so the parent still completes.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "notes"  # fixed here: a migration must not change when the code's constant does


def upgrade() -> None:
    op.create_table(
        "bulk_chunks",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("parent_id", sa.Uuid, nullable=False),
        sa.Column("chunk_no", sa.Integer, nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("note_ids", ARRAY(sa.Uuid), nullable=False),
        sa.Column("lost_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("parent_id", "chunk_no"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("bulk_chunks", schema=SCHEMA)
