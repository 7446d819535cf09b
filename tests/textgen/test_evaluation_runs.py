"""An evaluation's life around its engine (fake engines, tests/support/fake_engines.py, which
can hold a request on demand): stopped with the lab and resumed by the next, or cancelled; and
between labs on one database (replicas), where only the lab that holds the claim runs it. The
same on the real engine, killed with SIGKILL: tests/api/test_evaluations.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.support.fake_engines import FakeStarter
from textgen import Settings, TextGen
from textgen.experiments import Config, EvaluationSpec, datasets

MODEL = "local/fake"
# The fake engine holds the prompt "hold" until released.
ITEMS = datasets.parse('{"prompt": "a", "reference": "world"}\n'
                       '{"prompt": "hold", "reference": "world"}\n'
                       '{"prompt": "c", "reference": "nope"}\n', "jsonl")


def lab(folder: Path, lease: float = 30.0) -> tuple[TextGen, FakeStarter]:
    starter = FakeStarter()
    settings = Settings(MODEL=MODEL, MODEL_PATHS={MODEL: folder}, VLLM_ENDPOINT="",
                        METRICS_PORT=0, LAB_DATA_DIR=folder, UNLOAD_DRAIN_SECONDS=0.1,
                        EVALUATION_LEASE_SECONDS=lease)
    return TextGen(settings, engine_starter=starter.start), starter


def spec() -> EvaluationSpec:
    return EvaluationSpec(configs=[Config(model=MODEL, name="fake")], items=ITEMS,
                          scorer="contains", route="completions", concurrency=1)


async def until(check, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "the awaited state never came"
        await asyncio.sleep(0.02)


async def test_a_stopped_lab_leaves_it_running_and_the_next_one_finishes_it(tmp_path: Path) -> None:
    first, starter = lab(tmp_path)
    await first.start()
    experiment = await first.evaluations.start(spec())
    await asyncio.wait_for(starter.engines[0].holding.wait(), 10)  # "a" done, "hold" held
    await first.close()
    second, again = lab(tmp_path)
    await second.start()
    # The first lab left it `running`: the next one's to finish (its engine holds "hold" yet).
    assert (await second.runs.experiment(experiment))["status"] == "running"
    again.engines[0].release.set()

    async def ended() -> bool:
        return (await second.evaluations.status(experiment))["status"] != "running"

    await until(ended)
    results = await second.evaluations.results(experiment)
    await second.close()
    assert sorted(results.items["item"]) == ["0", "1", "2"]
    assert results.items.set_index("item")["score"].to_dict() == {"0": 1.0, "1": 1.0, "2": 0.0}
    # What the first lab scored was not asked again.
    assert [b["prompt"] for b in starter.engines[0].requests] == ["a", "hold"]
    assert [b["prompt"] for b in again.engines[0].requests] == ["hold", "c"]


async def test_an_evaluation_started_before_the_lab_is_ready_runs_once(tmp_path: Path) -> None:
    # The lab resumes `running` evaluations once it is ready, in the background; one started
    # by this process meanwhile is running already and must not get a second runner (the
    # first would go on unseen, and cancel would stop only the second).
    tg, starter = lab(tmp_path)
    await tg.start()
    try:
        experiment = await tg.evaluations.start(spec())
        await tg.evaluations.resume()  # as the readiness task does, whenever it comes
        starter.engines[0].release.set()
        assert (await tg.evaluations.wait(experiment))["status"] == "done"
        # One request per item (a second runner's would join the first's or hit the cache,
        # but each is a kept run of the experiment).
        assert len(await tg.runs.runs(experiment=experiment)) == 3
    finally:
        await tg.close()


async def test_cancel_keeps_what_was_scored(tmp_path: Path) -> None:
    tg, starter = lab(tmp_path)
    await tg.start()
    try:
        experiment = await tg.evaluations.start(spec())
        await asyncio.wait_for(starter.engines[0].holding.wait(), 10)
        await tg.evaluations.cancel(experiment)
        state = await tg.evaluations.status(experiment)
        assert state["status"] == "cancelled" and state["finished"] is not None
        assert (await tg.evaluations.results(experiment)).items["item"].tolist() == ["0"]
        engine = starter.engines[0]

        async def released() -> bool:
            return engine.held == 0

        await until(released)  # the held request is ended with it (its flight lost its reader)
        runs = await tg.runs.runs(experiment=experiment)
        assert sorted(r.status for r in runs) == ["aborted", "ok"]  # the cut one is kept too
    finally:
        await tg.close()


async def test_cancelling_an_ended_evaluation_keeps_its_status(tmp_path: Path) -> None:
    tg, starter = lab(tmp_path)
    await tg.start()
    try:
        starter.engines[0].release.set()
        experiment = await tg.evaluations.start(spec())
        assert (await tg.evaluations.wait(experiment))["status"] == "done"
        await tg.evaluations.cancel(experiment)
        assert (await tg.evaluations.status(experiment))["status"] == "done"
    finally:
        await tg.close()


# --- several labs on one database: the claim -------------------------------------------------


async def test_a_second_lab_leaves_a_running_evaluation_to_the_lab_that_runs_it(
        tmp_path: Path) -> None:
    # A replica that starts (or restarts) beside a live one must not run the live one's
    # evaluation a second time: the claim, renewed every third of its 5 s, holds.
    first, starter = lab(tmp_path, lease=5.0)
    await first.start()
    second, other = lab(tmp_path, lease=5.0)
    try:
        experiment = await first.evaluations.start(spec())
        await asyncio.wait_for(starter.engines[0].holding.wait(), 10)
        await second.start()

        async def looked_long_enough() -> bool:  # past a whole lease of the first's claim
            return second.evaluations.resume_passes >= 5

        await until(looked_long_enough, within=60)
        assert experiment not in second.evaluations.running()
        assert [b["prompt"] for b in other.engines[0].requests] == []
        starter.engines[0].release.set()
        assert (await first.evaluations.wait(experiment))["status"] == "done"
        assert len(await first.runs.runs(experiment=experiment)) == 3  # each item once
    finally:
        await second.close()
        await first.close()


async def test_an_evaluation_whose_lab_died_is_taken_over_once_its_claim_lapses(
        tmp_path: Path) -> None:
    # What a killed lab leaves: the evaluation `running`, claimed until a time it will never
    # renew. The next lab waits for that time, then runs it to its end.
    tg, starter = lab(tmp_path, lease=1.0)
    await tg.runs.start()
    lapses = time.time() + 2.0
    await tg.runs.save_experiment({
        "id": "eval-orphan", "kind": "evaluation", "name": "orphan", "created": time.time(),
        "status": "running", "error": None, "spec": spec().to_json(), "total": 3,
        "finished": None, "lease_owner": "a-lab-that-died", "lease_until": lapses})
    await tg.start()
    try:
        starter.engines[0].release.set()

        async def ended() -> bool:
            return (await tg.evaluations.status("eval-orphan"))["status"] != "running"

        await until(ended, within=60)
        runs = await tg.runs.runs(experiment="eval-orphan")
        assert len(runs) == 3 and min(r.created for r in runs) >= lapses
        assert (await tg.evaluations.status("eval-orphan"))["status"] == "done"
    finally:
        await tg.close()


async def test_cancelled_by_another_lab_the_runner_stops_and_leaves_the_status_be(
        tmp_path: Path) -> None:
    first, starter = lab(tmp_path, lease=3.0)
    await first.start()
    second, _ = lab(tmp_path, lease=3.0)
    await second.start()
    try:
        experiment = await first.evaluations.start(spec())
        engine = starter.engines[0]
        await asyncio.wait_for(engine.holding.wait(), 10)
        await second.evaluations.cancel(experiment)  # it runs in the first lab, not here

        async def stopped() -> bool:  # the first lab's renewal failed: its runner is gone
            return engine.held == 0 and experiment not in first.evaluations.running()

        await until(stopped, within=30)
        state = await first.evaluations.status(experiment)
        assert state["status"] == "cancelled" and state["finished"] is not None
        assert [b["prompt"] for b in engine.requests] == ["a", "hold"]  # nothing after it
    finally:
        await second.close()
        await first.close()
