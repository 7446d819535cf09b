"""The run store's schema brought up to date by Alembic, on the store's own connection.

Several lab replicas may start at once against one PostgreSQL: each takes the same advisory
lock first, so one migrates and the others find the schema done. On SQLite (a lab and a
notebook on one file, or two labs) the database's own write lock does the same.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

MIGRATIONS = Path(__file__).with_name("migrations")
# Any fixed 64-bit number, the same in every replica: "textgen runs" in ASCII, shortened.
_LOCK = 0x74657874_72756E73


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str | None:
    return ScriptDirectory.from_config(config()).get_current_head()


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> None:
    """Migrate to the newest schema (run through `AsyncConnection.run_sync`)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
    elif connection.dialect.name == "sqlite":
        # Python's sqlite3 has not begun a transaction yet (it does so before DML only): take
        # the write lock before reading the revision, so a second migrator waits for the
        # first (busy_timeout) and then finds the schema done, rather than creating it again.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    if current(connection) != head():
        command.upgrade(config(connection), "head")
