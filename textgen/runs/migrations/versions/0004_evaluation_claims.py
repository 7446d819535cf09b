"""Claims on running evaluations: which lab runs one, and until when (several replicas on one
database, or the next start after a crash, take over a claim that lapsed).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("experiments", sa.Column("lease_owner", sa.String(64)))
    op.add_column("experiments", sa.Column("lease_until", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:  # SQLite drops columns by a copy
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
