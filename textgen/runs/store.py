"""The run store: every run the lab is asked to keep, in SQLite (default) or PostgreSQL.

Writes never slow or fail a generation. `add` only appends to a buffer in memory; one writer
task inserts the buffer in batches. A database that is down, full or locked is a degradation:
counted (`text_run_store_errors_total`), logged once per outage, shown in /health, and the
runs wait in the buffer (bounded by RUNS_BUFFER_MAX, oldest dropped first and counted) until
it is back. Reads see the buffer too, so a run is in History the moment it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
from sqlalchemy import Text, cast, delete, func, insert, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import RunNotFound, RunStoreUnavailable
from ..metrics import Metrics
from . import migrate
from .database import open_engine
from .experiment_rows import ExperimentRows
from .record import RunRecord
from .tables import ExperimentRow, RunRow, ScoreRow

log = logging.getLogger(__name__)

_PRUNE_EVERY_SECONDS = 60.0
_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)


class RunStore(ExperimentRows):
    """`start()`, `add(record)` from the request path, queries from the UI, API and notebooks,
    `close()` (which writes what is left, bounded in time)."""

    def __init__(self, url: str | None, metrics: Metrics, *, batch_size: int = 256,
                 flush_seconds: float = 0.25, buffer_max: int = 10_000,
                 max_age_days: float = 0, max_runs: int = 0) -> None:
        self.url = url
        self.metrics = metrics
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.buffer_max = buffer_max
        self.max_age_days = max_age_days
        self.max_runs = max_runs
        self.backend = make_url(url).get_backend_name() if url else "off"
        self._engine: AsyncEngine | None = None
        self._pending: deque[RunRecord] = deque()
        self._writing: list[RunRecord] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._migrated = False
        self._schema_lock = asyncio.Lock()
        self._failing: str | None = None  # why the database is failing, while it is
        self._pruned_at = 0.0
        # Set whenever nothing waits to be written: what `flush` waits for.
        self._written = asyncio.Event()
        self._written.set()
        self._no_batch = asyncio.Event()  # set while no batch is being written
        self._no_batch.set()
        metrics.run_store_pending.set_function(self.buffered)

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def buffered(self) -> int:
        """Runs in memory, not yet written."""
        return len(self._pending) + len(self._writing)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the engine and start the writer; the schema is migrated on its first pass, so
        a database that is down never delays the lab's start."""
        if not self.enabled or self._writer is not None:
            return
        assert self.url is not None
        self._engine = open_engine(self.url)
        self._writer = asyncio.create_task(self._write_forever(), name="run store writer")

    async def close(self, grace: float = 5.0) -> None:
        """Stop the writer, write what is buffered (for at most `grace` s), close the pool."""
        if self._writer is None:
            return
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._writer = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain(), grace)
        if self.buffered():
            log.warning("run store: %d run(s) not written at shutdown (%s)",
                        self.buffered(), self._failing or "timeout")
        assert self._engine is not None
        await self._engine.dispose()

    async def _drain(self) -> None:
        while self._pending:  # each pass writes a batch or gives up: it always makes progress
            if not await self._write_once():
                return

    # --- the write path ---------------------------------------------------------------------

    def add(self, record: RunRecord) -> None:
        """Keep a run: O(1), never blocks, never raises."""
        if not self.enabled:
            return
        if len(self._pending) >= self.buffer_max:
            self._pending.popleft()
            self.metrics.run_store_dropped.inc()
        self._pending.append(record)
        self._written.clear()
        self._wake.set()

    async def flush(self, within: float = 10.0) -> None:
        """Wait until every run added so far is written (tests, notebooks, before a report)."""
        try:
            await asyncio.wait_for(self._written.wait(), within)
        except TimeoutError:
            raise RunStoreUnavailable(
                f"The run store could not write its runs in {within:g} s"
                + (f" ({self._failing})." if self._failing else ".")) from None

    async def _write_forever(self) -> None:
        failures = 0
        while True:
            # The first pass migrates at once; then the writer sleeps until there are runs.
            if self._migrated and not self._pending:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _PRUNE_EVERY_SECONDS)
                # A short pause gathers the runs of a burst into one batch.
                await asyncio.sleep(self.flush_seconds)
            if await self._write_once():
                failures = 0
                await self._prune_now_and_then()
            else:
                await asyncio.sleep(_RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)])
                failures += 1

    async def _write_once(self) -> bool:
        """Write one batch (after migrating, the first time); False when the database failed."""
        try:
            await self._ensure_schema()
            if self._pending:
                take = min(self.batch_size, len(self._pending))
                self._writing = [self._pending.popleft() for _ in range(take)]
                self._no_batch.clear()
                assert self._engine is not None
                async with self._engine.begin() as conn:
                    await conn.execute(insert(RunRow), [r.row() for r in self._writing])
                self.metrics.run_store_writes.inc(len(self._writing))
                self._writing = []
                self._no_batch.set()
        except Exception as exc:  # any database fault: keep the runs, say so once, retry
            self._pending.extendleft(reversed(self._writing))
            self._writing = []
            self._no_batch.set()
            self._failed("write", exc)
            return False
        except BaseException:
            # Cancelled mid-write (close() stops the writer): the batch goes back to the buffer,
            # for close() to write. Left in `_writing`, nothing would ever write it, and
            # close()'s drain would spin on it without yielding (a lab that never stopped).
            self._pending.extendleft(reversed(self._writing))
            self._writing = []
            self._no_batch.set()
            raise
        if not self._pending:
            self._written.set()
        self._recovered()
        return True

    async def _ensure_schema(self) -> None:
        if self._migrated:
            return
        async with self._schema_lock:  # the writer and a first read may both get here
            if self._migrated:
                return
            assert self._engine is not None
            async with self._engine.begin() as conn:
                await conn.run_sync(migrate.upgrade)
            self._migrated = True

    async def _prune_now_and_then(self) -> None:
        if not (self.max_age_days or self.max_runs):
            return
        now = time.time()
        if now - self._pruned_at < _PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = now
        with contextlib.suppress(RunStoreUnavailable):
            await self.prune()

    async def prune(self) -> int:
        """Delete the runs past RUNS_MAX_AGE_DAYS and, beyond RUNS_MAX_RUNS, the oldest."""
        deleted = 0
        async with self.transaction("prune") as conn:
            if self.max_age_days:
                cutoff = time.time() - self.max_age_days * 86400
                deleted += (await conn.execute(
                    delete(RunRow).where(RunRow.created < cutoff))).rowcount or 0
            if self.max_runs:
                keep = select(RunRow.id).order_by(RunRow.created.desc()).limit(self.max_runs)
                deleted += (await conn.execute(
                    delete(RunRow).where(RunRow.id.not_in(keep.scalar_subquery())))).rowcount or 0
        return deleted

    # --- reads and deletes ------------------------------------------------------------------

    async def runs(self, *, model: str | None = None, mode: str | None = None,
                   text: str | None = None, experiment: str | None = None,
                   before: float | None = None, limit: int = 50) -> list[RunRecord]:
        """Runs, newest first, filtered by model, mode, a text in the request or the reply,
        experiment, and (for paging) created before a time."""
        waiting = [r for r in (*self._writing, *self._pending)
                   if r.matches(model, mode, text, experiment, before)]
        query = select(RunRow).order_by(RunRow.created.desc()).limit(limit)
        if model:
            query = query.where(RunRow.model == model)
        if mode:
            query = query.where(RunRow.mode == mode)
        if experiment:
            query = query.where(RunRow.experiment == experiment)
        if before is not None:
            query = query.where(RunRow.created < before)
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
            query = query.where(or_(RunRow.text.ilike(pattern, escape="\\"),
                                    cast(RunRow.request, Text).ilike(pattern, escape="\\")))
        async with self.transaction("read") as conn:
            rows = (await conn.execute(query)).mappings().all()
        found = {r.id: r for r in waiting}
        found.update((row["id"], RunRecord(**row)) for row in rows)
        return sorted(found.values(), key=lambda r: r.created, reverse=True)[:limit]

    async def frame(self, **filters: Any) -> pd.DataFrame:
        """The runs `runs(**filters)` finds, as a DataFrame for a notebook: one row per run,
        `created` as a time, the request and answer as dicts."""
        rows = [r.row() for r in await self.runs(**filters)]
        frame = pd.DataFrame(rows, columns=[f.name for f in dataclasses.fields(RunRecord)])
        frame["created"] = pd.to_datetime(frame["created"], unit="s")
        return frame

    async def get(self, run_id: str) -> RunRecord:
        for record in (*self._writing, *self._pending):
            if record.id == run_id:
                return record
        async with self.transaction("read") as conn:
            row = (await conn.execute(select(RunRow).where(RunRow.id == run_id))).mappings().first()
        if row is None:
            raise RunNotFound(f"No run with id '{run_id}'.")
        return RunRecord(**row)

    async def count(self) -> int:
        async with self.transaction("read") as conn:
            written = (await conn.execute(select(func.count()).select_from(RunRow))).scalar_one()
        return int(written) + self.buffered()

    async def delete(self, run_ids: Iterable[str]) -> int:
        """Delete runs by id (written or still buffered); how many there were."""
        ids = set(run_ids)
        await self._batch_left(lambda r: r.id in ids)
        buffered = self._unbuffer(lambda r: r.id in ids)
        async with self.transaction("delete") as conn:
            result = await conn.execute(delete(RunRow).where(RunRow.id.in_(ids)))
        return len(buffered) + (result.rowcount or 0)

    async def delete_experiment(self, experiment: str) -> int:
        """Delete an experiment: its runs, its scores and its definition; how many runs."""
        await self._batch_left(lambda r: r.experiment == experiment)
        buffered = self._unbuffer(lambda r: r.experiment == experiment)
        async with self.transaction("delete") as conn:
            result = await conn.execute(delete(RunRow).where(RunRow.experiment == experiment))
            await conn.execute(delete(ScoreRow).where(ScoreRow.experiment == experiment))
            await conn.execute(delete(ExperimentRow).where(ExperimentRow.id == experiment))
        return len(buffered) + (result.rowcount or 0)

    async def _batch_left(self, gone: Callable[[RunRecord], bool]) -> None:
        """Wait while the batch being written holds a run to delete: deleted before its write
        commits, the write would bring it back. The write ends either way (written, or back in
        the buffer for `_unbuffer`)."""
        if any(gone(r) for r in self._writing):
            await self._no_batch.wait()

    def _unbuffer(self, gone: Callable[[RunRecord], bool]) -> list[RunRecord]:
        """Take runs not yet written out of the buffer; the ones taken."""
        taken = [r for r in self._pending if gone(r)]
        for record in taken:
            self._pending.remove(record)
        if not self.buffered():
            self._written.set()
        return taken

    @contextlib.asynccontextmanager
    async def transaction(self, operation: str):  # type: ignore[no-untyped-def]
        """A transaction for a read or a delete; a database fault is a RunStoreUnavailable."""
        if not self.enabled or self._engine is None:
            raise RunStoreUnavailable("The run store is off (RUNS_DATABASE_URL is empty).")
        try:
            await self._ensure_schema()
            async with self._engine.begin() as conn:
                yield conn
        except RunStoreUnavailable:
            raise
        except Exception as exc:
            self._failed(operation, exc)
            raise RunStoreUnavailable(
                f"The run store's database is unavailable ({type(exc).__name__}).") from None
        if not self.buffered():  # (runs waiting: the writer says when writes work again)
            self._recovered()  # a read that works after an outage ends it, as a write does

    # --- health -------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        status = "off" if not self.enabled else ("degraded" if self._failing else "ok")
        return {"backend": self.backend, "status": status, "buffered": self.buffered()}

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.metrics.run_store_errors.labels(operation).inc()
        # The exception's class only: a driver's message can hold the URL and its password.
        why = type(exc).__name__
        if self._failing is None:
            log.warning("run store: %s failed (%s); runs are kept in memory until the database "
                        "is back", operation, why)
        self._failing = why

    def _recovered(self) -> None:
        if self._failing is not None:
            log.info("run store: the database is back; buffered runs are being written")
            self._failing = None
