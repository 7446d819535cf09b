"""Experiments (evaluations) and their per-item scores.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from textgen.runs.tables import Document

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("spec", Document, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("finished", sa.Float),
    )
    op.create_table(
        "scores",
        sa.Column("experiment", sa.String(64), primary_key=True),
        sa.Column("config", sa.String(256), primary_key=True),
        sa.Column("item", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(128)),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scores")
    op.drop_table("experiments")
