"""The run store's experiments: evaluations' definitions, where they are, who runs them, and
their scores. Written at once, not buffered: an evaluation resumes from them."""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..errors import ExperimentNotFound
from .tables import ExperimentRow, ScoreRow


class ExperimentRows:
    """RunStore's experiment and score rows (a part of RunStore, over its transactions)."""

    def transaction(self, operation: str) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError  # RunStore's

    async def save_experiment(self, values: dict[str, Any]) -> None:
        async with self.transaction("experiment") as conn:
            await conn.execute(insert(ExperimentRow), [values])

    async def claim_experiment(self, experiment: str, owner: str, seconds: float) -> bool:
        """Hold a running experiment as `owner` for `seconds` from now (or renew the hold);
        False when it is not running, or another owner holds it and its claim has not lapsed.
        One statement, so two labs claiming at once cannot both get it."""
        now = time.time()
        claimable = or_(ExperimentRow.lease_owner == owner, ExperimentRow.lease_until.is_(None),
                        ExperimentRow.lease_until < now)
        async with self.transaction("experiment") as conn:
            result = await conn.execute(
                update(ExperimentRow)
                .where(ExperimentRow.id == experiment, ExperimentRow.status == "running",
                       claimable)
                .values(lease_owner=owner, lease_until=now + seconds))
        return result.rowcount == 1

    async def end_experiment(self, experiment: str, owner: str | None, **values: Any) -> bool:
        """Write a running experiment's end (`status`, `error`, `finished`) and drop its claim:
        only while it runs and, with `owner`, only by the lab that holds it. False when it had
        ended, or another lab holds it (the end is that lab's to write)."""
        condition = [ExperimentRow.id == experiment, ExperimentRow.status == "running"]
        if owner is not None:
            condition.append(ExperimentRow.lease_owner == owner)
        async with self.transaction("experiment") as conn:
            result = await conn.execute(update(ExperimentRow).where(*condition).values(
                **values, lease_owner=None, lease_until=None))
        return result.rowcount == 1

    async def claimable_experiments(self, kind: str) -> list[dict[str, Any]]:
        """Running experiments no lab holds: never claimed, released, or lapsed."""
        query = (select(ExperimentRow)
                 .where(ExperimentRow.kind == kind, ExperimentRow.status == "running",
                        or_(ExperimentRow.lease_until.is_(None),
                            ExperimentRow.lease_until < time.time()))
                 .order_by(ExperimentRow.created))
        async with self.transaction("read") as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]

    async def release_experiments(self, owner: str) -> None:
        """Give up `owner`'s claims (a lab stopping cleanly): the next lab takes them at once."""
        async with self.transaction("experiment") as conn:
            await conn.execute(update(ExperimentRow).where(ExperimentRow.lease_owner == owner)
                               .values(lease_owner=None, lease_until=None))

    async def experiment(self, experiment: str) -> dict[str, Any]:
        async with self.transaction("read") as conn:
            row = (await conn.execute(select(ExperimentRow).where(
                ExperimentRow.id == experiment))).mappings().first()
        if row is None:
            raise ExperimentNotFound(f"No experiment with id '{experiment}'.")
        return dict(row)

    async def experiments(self, *, kind: str | None = None, status: str | None = None,
                          limit: int = 100) -> list[dict[str, Any]]:
        query = select(ExperimentRow).order_by(ExperimentRow.created.desc()).limit(limit)
        if kind:
            query = query.where(ExperimentRow.kind == kind)
        if status:
            query = query.where(ExperimentRow.status == status)
        async with self.transaction("read") as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]

    async def add_scores(self, rows: list[dict[str, Any]]) -> None:
        """Keep scores; an item already scored (by another replica resuming the same
        evaluation) keeps its first score."""
        if not rows:
            return
        async with self.transaction("experiment") as conn:
            dialect = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
            await conn.execute(dialect(ScoreRow).on_conflict_do_nothing(), rows)

    async def scores(self, experiment: str) -> list[dict[str, Any]]:
        query = select(ScoreRow).where(ScoreRow.experiment == experiment)
        async with self.transaction("read") as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]
