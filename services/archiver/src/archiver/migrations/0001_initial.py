"""Note versions, snapshots, and servicekit's inbox and outbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import ARRAY

from servicekit import create_outbox_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _note_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("note_id", sa.Uuid, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("owner_id", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("tags", ARRAY(sa.Text), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    op.create_table(
        "note_versions",
        *_note_columns(),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("note_id", "version"),
        schema=schema,
    )
    op.create_table(
        "snapshots",
        *_note_columns(),
        sa.Column("checksum", sa.Text, nullable=False),
        sa.Column("job_id", sa.Uuid, nullable=False),
        sa.Column(
            "archived_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("note_id", "version"),
        schema=schema,
    )
    create_outbox_tables(op.get_bind(), schema)


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    for table in ("snapshots", "note_versions", "inbox", "outbox"):
        op.drop_table(table, schema=schema)
