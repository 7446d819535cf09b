"""The runs table.

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from textgen.runs.tables import Document

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("route", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("cache", sa.String(16), nullable=False),
        sa.Column("request", Document, nullable=False),
        sa.Column("answer", Document),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("ttft", sa.Float),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("identity", sa.Text),
        sa.Column("engine", sa.String(32)),
        sa.Column("vllm_version", sa.String(64)),
        sa.Column("device", sa.String(256)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("experiment", sa.String(64)),
    )
    op.create_index("ix_runs_created", "runs", ["created"])
    op.create_index("ix_runs_model_created", "runs", ["model", "created"])
    op.create_index("ix_runs_experiment", "runs", ["experiment"])


def downgrade() -> None:
    op.drop_table("runs")
