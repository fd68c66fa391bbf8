"""Initial schema: notes, API keys, idempotency records, jobs, outbox and inbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from servicekit import create_outbox_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "notes"  # fixed here: a migration must not change when the code's constant does


def _ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    create_outbox_tables(op.get_bind(), SCHEMA)
    op.create_table(
        "notes",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("owner_id", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("tags", ARRAY(sa.Text), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("archived_at", nullable=True),
        schema=SCHEMA,
    )
    # The list's keyset order, newest first; and tag filters.
    op.create_index(
        "ix_notes_owner_created", "notes", ["owner_id", "created_at", "id"], schema=SCHEMA
    )
    op.create_index("ix_notes_tags", "notes", ["tags"], schema=SCHEMA, postgresql_using="gin")
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("owner_id", sa.Text, nullable=False),
        sa.Column("key_hash", sa.Text, nullable=False, unique=True),
        _ts("created_at"),
        _ts("revoked_at", nullable=True),
        schema=SCHEMA,
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("owner_id", sa.Text, primary_key=True),
        sa.Column("route", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("response_body", JSONB, nullable=True),
        sa.Column("response_headers", JSONB, nullable=True),
        _ts("created_at"),
        _ts("locked_at", nullable=True),
        _ts("expires_at"),
        schema=SCHEMA,
    )
    op.create_index("ix_idempotency_expires", "idempotency_keys", ["expires_at"], schema=SCHEMA)
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("owner_id", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("note_id", sa.Uuid, nullable=True),
        sa.Column("parent_id", sa.Uuid, nullable=True),
        _ts("run_at", nullable=True),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempts", JSONB, nullable=False, server_default="[]"),
        sa.Column("result", JSONB, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("progress", JSONB, nullable=True),
        sa.Column("trace_id", sa.Text, nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_jobs_owner_created", "jobs", ["owner_id", "created_at", "id"], schema=SCHEMA
    )
    op.create_index("ix_jobs_parent", "jobs", ["parent_id"], schema=SCHEMA)


def downgrade() -> None:
    for table in ("jobs", "idempotency_keys", "api_keys", "notes", "inbox", "outbox"):
        op.drop_table(table, schema=SCHEMA)
