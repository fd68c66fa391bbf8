"""Jobs carry the priority they were submitted at (critical, default or low).

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
    # Every job written before this revision was submitted at `default`.
    op.add_column(
        "jobs",
        sa.Column("priority", sa.Text, nullable=False, server_default="default"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("jobs", "priority", schema=SCHEMA)
