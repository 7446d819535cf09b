"""Alembic's environment for the run store: migrations run on the connection the store gives
(`textgen.runs.migrate`), online only; `alembic` on the command line is not needed."""

from __future__ import annotations

from alembic import context

from textgen.runs.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
