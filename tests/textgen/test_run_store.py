"""The run store on real databases: SQLite (the default) and PostgreSQL (Debian's, started by
the tests on a free port), schema by Alembic, writes batched off the request path, outages
buffered and written once the database is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.postgres import PASSWORD, PostgresServer, postgres_server
from textgen.errors import RunNotFound, RunStoreUnavailable
from textgen.metrics import Metrics
from textgen.runs import RunRecord, RunStore, migrate


def run(n: int, *, model: str = "m", mode: str = "api", text: str = "", created: float | None = None,
        experiment: str | None = None) -> RunRecord:
    return RunRecord(
        model=model, route="chat", mode=mode, status="ok", cache="MISS",
        request={"model": model, "messages": [{"role": "user", "content": f"question {n}"}],
                 "stream": True, "temperature": 0},
        answer={"choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": text or f"answer {n}"}}]},
        seconds=0.5, created=created if created is not None else 1_000_000.0 + n,
        experiment=experiment,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'runs.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.url
    store = RunStore(url, Metrics(), flush_seconds=0.01)
    await store.start()
    if request.param == "postgresql":  # a database shared by the session: start empty
        await store.delete([r.id for r in await store.runs(limit=1000)])
    yield store
    await store.close()


async def test_runs_come_back_newest_first_without_the_transport_fields(store: RunStore) -> None:
    for n in range(3):
        store.add(run(n))
    await store.flush()
    runs = await store.runs()
    assert [r.text for r in runs] == ["answer 2", "answer 1", "answer 0"]
    assert "stream" not in runs[0].request and runs[0].request["temperature"] == 0
    assert (await store.get(runs[1].id)).request["messages"][0]["content"] == "question 1"
    assert await store.count() == 3


async def test_filters_by_model_mode_text_experiment_and_page(store: RunStore) -> None:
    store.add(run(1, model="a", mode="chat", text="Lisbon is the capital"))
    store.add(run(2, model="b", mode="api", text="café au lait", experiment="e1"))
    store.add(run(3, model="a", mode="api", text="100% sure_thing"))
    await store.flush()
    assert [r.text for r in await store.runs(model="a")] == ["100% sure_thing",
                                                             "Lisbon is the capital"]
    assert [r.model for r in await store.runs(mode="chat")] == ["a"]
    assert [r.text for r in await store.runs(text="lisbon")] == ["Lisbon is the capital"]
    assert [r.text for r in await store.runs(text="café")] == ["café au lait"]
    assert [r.text for r in await store.runs(text="question 1")] == ["Lisbon is the capital"]
    # LIKE's wildcards are searched as text, not as patterns.
    assert [r.text for r in await store.runs(text="0% s")] == ["100% sure_thing"]
    assert await store.runs(text="_x") == []
    assert [r.text for r in await store.runs(experiment="e1")] == ["café au lait"]
    newest = await store.runs(limit=1)
    assert [r.text for r in await store.runs(before=newest[0].created, limit=5)] == [
        "café au lait", "Lisbon is the capital"]


async def test_an_item_scored_twice_keeps_its_first_score(store: RunStore) -> None:
    """Two replicas resuming one evaluation both score an item: no error, one score."""
    await store.save_experiment({"id": "e", "kind": "evaluation", "name": "e", "created": 1.0,
                                 "status": "running", "error": None, "spec": {}, "total": 1,
                                 "finished": None})
    row = {"experiment": "e", "config": "c", "item": "0", "request_id": "r1", "output": "a",
           "score": 1.0, "status": "ok", "seconds": 0.1, "completion_tokens": 1}
    await store.add_scores([row])
    await store.add_scores([{**row, "request_id": "r2", "score": 0.0}])
    assert [(s["request_id"], s["score"]) for s in await store.scores("e")] == [("r1", 1.0)]
    await store.delete_experiment("e")
    assert await store.scores("e") == []


async def test_runs_as_a_dataframe(store: RunStore) -> None:
    store.add(run(1, model="a"))
    store.add(run(2, model="b"))
    frame = await store.frame(model="b")
    assert frame["model"].tolist() == ["b"] and frame["text"].tolist() == ["answer 2"]
    assert str(frame["created"].dtype).startswith("datetime64")
    assert frame["request"][0]["messages"][0]["content"] == "question 2"
    assert (await store.frame(model="nobody")).empty


async def test_a_run_is_readable_before_it_is_written(store: RunStore) -> None:
    store.flush_seconds = 5.0  # the writer waits: the run stays in the buffer a while
    record = run(1)
    store.add(record)
    assert [r.id for r in await store.runs()] == [record.id]
    assert (await store.get(record.id)).text == "answer 1"
    store.flush_seconds = 0.01
    await store.flush()


async def test_deleting_runs_and_an_experiment(store: RunStore) -> None:
    keep, gone = run(1), run(2)
    store.add(keep)
    store.add(gone)
    for n in range(3, 6):
        store.add(run(n, experiment="sweep-7"))
    await store.flush()
    assert await store.delete([gone.id]) == 1
    assert await store.delete([gone.id]) == 0
    with pytest.raises(RunNotFound):
        await store.get(gone.id)
    assert await store.delete_experiment("sweep-7") == 3
    assert [r.id for r in await store.runs()] == [keep.id]


async def test_retention_by_age_and_by_count(store: RunStore) -> None:
    now = time.time()
    store.add(run(1, created=now - 3 * 86400))
    for n in range(2, 7):
        store.add(run(n, created=now - n))
    await store.flush()
    store.max_age_days, store.max_runs = 2, 3
    assert await store.prune() == 3  # one too old, then the two oldest past three
    assert [r.text for r in await store.runs()] == ["answer 2", "answer 3", "answer 4"]


async def test_the_schema_is_alembics_head(store: RunStore) -> None:
    assert store.url is not None
    assert await store.count() == 0  # a read waits for the schema, as a write does
    engine = create_async_engine(store.url)
    async with engine.connect() as conn:
        assert await conn.run_sync(migrate.current) == migrate.head() == "0005"
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
    await engine.dispose()
    assert {"runs", "experiments", "scores", "votes", "alembic_version"} <= set(tables)


async def test_of_two_labs_claiming_one_evaluation_at_once_one_gets_it(store: RunStore) -> None:
    """The claim is one statement: two stores (two labs) asking at once, one gets it; the
    holder renews it, the other cannot; once lapsed it is the other's; an end written by a lab
    that does not hold it writes nothing."""
    experiment = f"eval-claim-{time.monotonic_ns()}"
    await store.save_experiment({
        "id": experiment, "kind": "evaluation", "name": "claimed", "created": time.time(),
        "status": "running", "error": None, "spec": {}, "total": 1, "finished": None,
        "lease_owner": None, "lease_until": None})
    assert experiment in [r["id"] for r in await store.claimable_experiments("evaluation")]
    other = RunStore(store.url, Metrics())
    await other.start()
    try:
        got = await asyncio.gather(store.claim_experiment(experiment, "a", 30),
                                   other.claim_experiment(experiment, "b", 30))
        assert sorted(got) == [False, True]
        holder, loser = ("a", "b") if got[0] else ("b", "a")
        assert await store.claim_experiment(experiment, holder, 2.0)  # renewed, short now
        assert not await other.claim_experiment(experiment, loser, 30)
        assert experiment not in [r["id"] for r in await store.claimable_experiments("evaluation")]
        assert not await store.end_experiment(experiment, loser, status="done")
        await asyncio.sleep(2.1)  # the claim's own clock: it lapses 2 s after its renewal
        assert await other.claim_experiment(experiment, loser, 30)  # lapsed: taken over
        assert await store.end_experiment(experiment, loser, status="done", finished=time.time())
        row = await store.experiment(experiment)
        assert (row["status"], row["lease_owner"], row["lease_until"]) == ("done", None, None)
    finally:
        await other.close()
        await store.delete_experiment(experiment)


async def test_runs_survive_a_restart_of_the_store(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"
    first = RunStore(url, Metrics(), flush_seconds=0.01)
    await first.start()
    first.add(run(1))
    await first.close()  # writes what is buffered
    second = RunStore(url, Metrics())
    await second.start()
    try:
        assert [r.text for r in await second.runs()] == ["answer 1"]
    finally:
        await second.close()


class FirstWriteHangs:
    """Stands in for the store's database engine (a fake: a real database cannot be made to
    hang on demand): its first transaction waits until cancelled, the rest are the real
    engine's."""

    def __init__(self, real: Any) -> None:
        self.real, self.entered, self._hung = real, asyncio.Event(), False

    def begin(self) -> Any:
        if self._hung:
            return self.real.begin()
        self._hung = True
        return self._hang()

    @contextlib.asynccontextmanager
    async def _hang(self) -> AsyncIterator[None]:
        self.entered.set()
        await asyncio.Event().wait()
        yield

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_closing_while_a_batch_is_written_writes_it_and_returns(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"
    store = RunStore(url, Metrics(), flush_seconds=0.01)
    await store.start()
    store.add(run(1))
    await store.flush()  # migrated, and one run written
    store._engine = FirstWriteHangs(store._engine)  # type: ignore[assignment]
    store.add(run(2))
    await asyncio.wait_for(store._engine.entered.wait(), 30)  # type: ignore[union-attr]
    assert store.buffered() == 1
    # close() cancels the writer in the middle of that batch: the batch goes back to the
    # buffer and is written; close() returns (it once spun on it for ever).
    await asyncio.wait_for(store.close(), 30)
    again = RunStore(url, Metrics())
    await again.start()
    try:
        assert [r.text for r in await again.runs()] == ["answer 2", "answer 1"]
    finally:
        await again.close()


async def test_three_stores_migrate_one_new_sqlite_file_at_once(tmp_path: Path) -> None:
    """A lab and a notebook (or two labs) on one new file: SQLite's write lock lets one
    migrate, the others wait and find the schema done (without it, one failed with
    "table already exists" and its first write was refused)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"
    stores = [RunStore(url, Metrics(), flush_seconds=0.01) for _ in range(3)]
    await asyncio.gather(*(s.start() for s in stores))
    try:
        assert await asyncio.gather(*(s.count() for s in stores)) == [0, 0, 0]
        assert all(s.health()["status"] == "ok" for s in stores)
    finally:
        for s in stores:
            await s.close()


async def test_two_stores_migrate_one_postgres_at_once(tmp_path: Path) -> None:
    """Replicas starting together: the advisory lock lets one migrate, the other waits."""
    with postgres_server() as server:
        stores = [RunStore(server.url, Metrics(), flush_seconds=0.01) for _ in range(3)]
        for s in stores:
            await s.start()
        for n, s in enumerate(stores):
            s.add(run(n))
        await asyncio.gather(*(s.flush() for s in stores))
        assert await stores[0].count() == 3
        for s in stores:
            await s.close()


async def test_an_outage_loses_no_run_and_is_visible(caplog: pytest.LogCaptureFixture) -> None:
    """The database goes down under the writer: adding never fails, health and metrics say
    so, and every run (before, during, after) is there once it is back."""
    caplog.set_level(logging.INFO, logger="textgen.runs.store")
    with postgres_server() as server:
        metrics = Metrics()
        store = RunStore(server.url, metrics, flush_seconds=0.01)
        await store.start()
        store.add(run(1))
        await store.flush()
        server.stop()
        during = [run(n) for n in range(2, 6)]
        for record in during:
            store.add(record)  # never raises, never blocks
        deadline = time.monotonic() + 30
        while store.health()["status"] != "degraded":
            assert time.monotonic() < deadline, "the outage never showed in health"
            await asyncio.sleep(0.05)
        assert store.health()["buffered"] == 4
        assert metrics.registry.get_sample_value("text_run_store_errors_total",
                                                 {"operation": "write"}) >= 1
        assert metrics.registry.get_sample_value("text_run_store_pending") == 4
        with pytest.raises(RunStoreUnavailable) as raised:
            await store.count()
        assert PASSWORD not in raised.value.message
        # Reads still show the buffered runs' ids through get().
        assert (await store.get(during[0].id)).text == "answer 2"
        server.start()
        store.add(run(6))
        await store.flush(within=60)
        assert store.health()["status"] == "ok"
        assert [r.text for r in await store.runs()] == [f"answer {n}" for n in range(6, 0, -1)]
        await store.close()
    logged = caplog.text
    assert "run store: write failed" in logged and "the database is back" in logged
    assert PASSWORD not in logged


async def test_a_read_that_works_again_ends_the_outage() -> None:
    """With nothing to write, only reads meet the database: one that fails shows the outage,
    the next that works ends it (health must not stay degraded until some run is written)."""
    with postgres_server() as server:
        store = RunStore(server.url, Metrics(), flush_seconds=0.01)
        await store.start()
        assert await store.count() == 0
        server.stop()
        with pytest.raises(RunStoreUnavailable):
            await store.count()
        assert store.health()["status"] == "degraded"
        server.start()
        assert await store.count() == 0
        assert store.health()["status"] == "ok"
        await store.close()


async def test_a_full_buffer_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    metrics = Metrics()
    store = RunStore(f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}", metrics, buffer_max=3)
    # Not started: nothing writes, as when the database is down.
    records = [run(n) for n in range(5)]
    for record in records:
        store.add(record)
    assert [r.id for r in store._pending] == [r.id for r in records[2:]]
    assert metrics.registry.get_sample_value("text_run_store_dropped_total") == 2


async def test_no_url_means_no_store() -> None:
    store = RunStore(None, Metrics())
    await store.start()
    store.add(run(1))  # kept nowhere, and no error
    assert store.health()["status"] == "off"
    with pytest.raises(RunStoreUnavailable):
        await store.runs()
    await store.close()


async def test_a_database_outage_during_generation_loses_no_answer_and_no_run(
        tmp_path: Path) -> None:
    """Through the lab's own path: PostgreSQL stops while a kept request generates. Every
    request is answered, /health says the store is degraded, and once the database is back
    every run is in it. (The engine is a fake, tests/support/fake_engines.py, to hold a
    request open while the database goes away; the database is real.)"""
    from tests.support.fake_engines import FakeStarter
    from textgen import OpenAIRequest, Settings, TextGen

    model = "local/fake"
    with postgres_server() as server:
        starter = FakeStarter()
        settings = Settings(MODEL=model, MODEL_PATHS={model: tmp_path}, VLLM_ENDPOINT="",
                            METRICS_PORT=0, LAB_DATA_DIR=tmp_path,
                            RUNS_DATABASE_URL=server.url)  # type: ignore[arg-type]
        tg = TextGen(settings, engine_starter=starter.start)
        await tg.start()
        engine = starter.engines[0]

        def kept(prompt: str) -> OpenAIRequest:
            return OpenAIRequest("completions", {"model": model, "prompt": prompt},
                                 record="api", write_cache=False, read_cache=False)

        try:
            await tg.complete(kept("before"))
            await tg.runs.flush()
            held = asyncio.create_task(tg.complete(kept("hold")))  # held by the fake engine
            await asyncio.wait_for(engine.holding.wait(), 10)
            server.stop()
            engine.release.set()
            answers = [await held, await tg.complete(kept("during"))]
            assert all(a["choices"][0]["text"] == "Hello world" for a in answers)
            deadline = time.monotonic() + 30
            while tg.health()["run_store"]["status"] != "degraded":
                assert time.monotonic() < deadline, "the outage never showed in /health"
                await asyncio.sleep(0.05)
            assert tg.runs.buffered() == 2
            server.start()
            await tg.complete(kept("after"))
            await tg.runs.flush(within=60)
            assert tg.health()["run_store"]["status"] == "ok"
            prompts = [r.request["prompt"] for r in await tg.runs.runs(mode="api")]
            assert prompts == ["after", "during", "hold", "before"]
        finally:
            await tg.close()
