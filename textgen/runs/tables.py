"""The run store's tables, as SQLAlchemy declares them; Alembic's migrations create them.

    runs          every kept request and its answer (textgen.runs.store)
    experiments   an evaluation (or later a comparison): its definition, state and summary
    scores        one configuration's answer to one item of an evaluation, scored
    votes         a blind pairwise comparison's verdict: which of two answers was better
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSONB on PostgreSQL (compact, indexable), JSON text on SQLite.
Document = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class RunRow(Base):
    """One request the lab answered (or refused), as it was asked and as it was answered."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Seconds since the epoch (UTC) when the request came in: sortable on both databases.
    created: Mapped[float] = mapped_column(Float, nullable=False)
    model: Mapped[str] = mapped_column(String(512), nullable=False)
    route: Mapped[str] = mapped_column(String(32), nullable=False)
    # Where the run came from: api, playground, chat, compare, sweep, evaluation, notebook.
    mode: Mapped[str] = mapped_column(String(32), nullable=False)
    # ok, aborted (stopped before its end), or the error code it failed with.
    status: Mapped[str] = mapped_column(String(64), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    cache: Mapped[str] = mapped_column(String(16), nullable=False)
    request: Mapped[dict[str, Any]] = mapped_column(Document, nullable=False)
    answer: Mapped[dict[str, Any] | None] = mapped_column(Document)
    # The first choice's text (or a tool call's arguments): what History shows and searches.
    text: Mapped[str] = mapped_column(Text, nullable=False, default="")
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    ttft: Mapped[float | None] = mapped_column(Float)
    # Seconds the engine kept the request waiting before it scheduled it (in-process vLLM only).
    queue: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float, nullable=False)
    # What the cache key calls the model's weights and serve flags; then the engine's make.
    identity: Mapped[str | None] = mapped_column(Text)
    engine: Mapped[str | None] = mapped_column(String(32))
    vllm_version: Mapped[str | None] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(256))
    request_id: Mapped[str | None] = mapped_column(String(128))
    # The experiment (evaluation, comparison) a run belongs to; none for a single run.
    experiment: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_runs_created", "created"),
        Index("ix_runs_model_created", "model", "created"),
        Index("ix_runs_experiment", "experiment"),
    )


class ExperimentRow(Base):
    """An evaluation: what it runs (`spec`: dataset, configurations, scorer), where it is."""

    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(256), nullable=False)
    created: Mapped[float] = mapped_column(Float, nullable=False)
    # queued, running, done, cancelled, failed; `running` after a restart means "resume it".
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column(Document, nullable=False)
    total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    finished: Mapped[float | None] = mapped_column(Float)
    # While running: the lab that runs it, and until when its claim holds (renewed while it
    # runs; a lapsed claim is another lab's to take: textgen.experiments.evaluation).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[float | None] = mapped_column(Float)


class ScoreRow(Base):
    """One configuration's answer to one dataset item, and its score (None: not scorable)."""

    __tablename__ = "scores"

    experiment: Mapped[str] = mapped_column(String(64), primary_key=True)
    config: Mapped[str] = mapped_column(String(256), primary_key=True)
    item: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The kept run's request_id (runs.request_id): the answer whole, with its figures.
    request_id: Mapped[str | None] = mapped_column(String(128))
    output: Mapped[str] = mapped_column(Text, nullable=False, default="")
    score: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(64), nullable=False)
    seconds: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class VoteRow(Base):
    """One blind comparison: two configurations answered one prompt anonymously, and the
    researcher said which was better, or a tie (textgen.experiments.arena)."""

    __tablename__ = "votes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Votes are ranked per arena: one leaderboard per question a researcher asks.
    arena: Mapped[str] = mapped_column(String(64), nullable=False)
    created: Mapped[float] = mapped_column(Float, nullable=False)
    left: Mapped[str] = mapped_column(String(512), nullable=False)
    right: Mapped[str] = mapped_column(String(512), nullable=False)
    winner: Mapped[str] = mapped_column(String(8), nullable=False)  # left, right or tie
    left_run: Mapped[str | None] = mapped_column(String(32))
    right_run: Mapped[str | None] = mapped_column(String(32))
    prompt: Mapped[str] = mapped_column(Text, nullable=False, default="")

    __table_args__ = (Index("ix_votes_arena", "arena"),)
