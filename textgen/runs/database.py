"""The run store's database: SQLite (a file under LAB_DATA_DIR, by default) or PostgreSQL,
through SQLAlchemy's async engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .record import as_json


def open_engine(url_text: str) -> AsyncEngine:
    """An engine for the database at `url_text`; a SQLite file's folder is made if need be."""
    url = make_url(url_text)
    _make_sqlite_folder(url)
    # Unicode as it is (SQLite stores JSON as text): a search for "café" finds it.
    engine = create_async_engine(url, pool_pre_ping=True, json_serializer=as_json)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _make_sqlite_folder(url: URL) -> None:
    """SQLite creates the file on first use, but not its folder (LAB_DATA_DIR)."""
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL: History reads while the writer writes; a busy timeout instead of "database is locked"
    # when two processes (a lab and a notebook) share the file.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
