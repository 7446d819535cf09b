"""A run's queue time: how long the engine kept it waiting before it first scheduled it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("queue", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:  # SQLite drops columns by a copy
        batch.drop_column("queue")
