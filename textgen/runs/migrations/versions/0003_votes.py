"""Blind pairwise votes (the arena's leaderboard).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "votes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("arena", sa.String(64), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("left", sa.String(512), nullable=False),
        sa.Column("right", sa.String(512), nullable=False),
        sa.Column("winner", sa.String(8), nullable=False),
        sa.Column("left_run", sa.String(32)),
        sa.Column("right_run", sa.String(32)),
        sa.Column("prompt", sa.Text, nullable=False),
    )
    op.create_index("ix_votes_arena", "votes", ["arena"])


def downgrade() -> None:
    op.drop_index("ix_votes_arena", table_name="votes")
    op.drop_table("votes")
