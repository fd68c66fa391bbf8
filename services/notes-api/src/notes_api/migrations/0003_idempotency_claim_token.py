"""Idempotency claims carry a token: only the request that holds the claim may complete it.

A retry that takes over a stale claim writes a new token, so the request it took over (still
running, only slow) finds its token gone at its final UPDATE and rolls back instead of committing
a second effect.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "notes"  # fixed here: a migration must not change when the code's constant does


def upgrade() -> None:
    # Nullable: records written before this revision have none, and a completed record needs none.
    op.add_column(
        "idempotency_keys", sa.Column("claim_token", sa.Uuid, nullable=True), schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_column("idempotency_keys", "claim_token", schema=SCHEMA)
