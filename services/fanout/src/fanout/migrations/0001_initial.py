"""The audit trail, per-owner activity, and servicekit's inbox and outbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import context, op

from servicekit import create_outbox_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = context.config.attributes["schema"]
    op.create_table(
        "note_changes",
        sa.Column("event_id", sa.Uuid, primary_key=True),
        sa.Column("change", sa.Text, nullable=False),
        sa.Column("note_id", sa.Uuid, nullable=False),
        sa.Column("owner_id", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=schema,
    )
    op.create_table(
        "owner_activity",
        sa.Column("owner_id", sa.Text, primary_key=True),
        sa.Column("changes", sa.BigInteger, nullable=False),
        sa.Column("last_change_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema,
    )
    create_outbox_tables(op.get_bind(), schema)


def downgrade() -> None:
    schema = context.config.attributes["schema"]
    for table in ("owner_activity", "note_changes", "inbox", "outbox"):
        op.drop_table(table, schema=schema)
