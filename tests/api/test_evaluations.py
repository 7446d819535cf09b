"""Evaluations over the API on the real engine: a dataset × configurations × a scorer run in
the background; lm-eval's tasks scored as lm-eval scores them; an evaluation that outlives a
lab killed mid-way, every item scored once."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil
import pytest

from tests.api.test_protocol import LM_EVAL, run_lm_eval
from tests.support.processes import LabServer, lab_server
from textgen import DEFAULT_MODEL

pytestmark = pytest.mark.engine

CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
            ("Germany", "Berlin"), ("Egypt", "Cairo")]
DATASET = "".join(json.dumps({"question": f"What is the capital of {country}?",
                              "reference": city}) + "\n" for country, city in CAPITALS)
CONFIGS = [{"model": DEFAULT_MODEL, "settings": {"max_tokens": 12}, "name": "plain"},
           {"model": DEFAULT_MODEL, "settings": {"max_tokens": 12}, "name": "one word",
            "system": "Answer with the city's name only."}]


def api(lab: LabServer) -> httpx.Client:
    return httpx.Client(base_url=lab.base_url, headers=lab.headers, timeout=60)


def evaluated(lab: LabServer, body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run an evaluation over the API to its end: its state (done) and its items, in order."""
    with api(lab) as client:
        r = client.post("/lab/evaluations", json=body)
        assert r.status_code == 202, r.text
        state = finished(client, r.json()["id"])
        assert state["status"] == "done", state
        items = client.get(f"/lab/evaluations/{state['id']}/items").json()["data"]
    return state, sorted(items, key=lambda i: int(i["item"]))


def finished(client: httpx.Client, experiment: str, timeout: float = 600) -> dict[str, Any]:
    """The evaluation's state once it has ended (bounded: it runs in the background)."""
    deadline = time.monotonic() + timeout
    while (state := client.get(f"/lab/evaluations/{experiment}").json())["status"] == "running":
        assert time.monotonic() < deadline, f"still running after {timeout:.0f} s: {state}"
        time.sleep(0.2)
    return state


def test_an_evaluation_of_two_configurations(lab: LabServer) -> None:
    with api(lab) as client:
        r = client.post("/lab/evaluations", json={
            "name": "capitals", "dataset": {"jsonl": DATASET}, "configs": CONFIGS,
            "scorer": "contains", "concurrency": 3})
        assert r.status_code == 202, r.text
        experiment = r.json()["id"]
        state = finished(client, experiment)
        assert state["status"] == "done" and state["error"] is None
        assert state["total"] == state["done"] == 12
        summary = {row["config"]: row for row in state["summary"]}
        assert set(summary) == {"plain", "one word"}
        for row in summary.values():
            assert row["items"] == row["scored"] == 6 and row["errors"] == 0
            assert row["ci_low"] <= row["score"] <= row["ci_high"]
            assert row["mean_seconds"] > 0 and row["mean_completion_tokens"] > 0
        items = client.get(f"/lab/evaluations/{experiment}/items").json()["data"]
        assert sorted((i["config"], i["item"]) for i in items) == sorted(
            (c["name"], str(n)) for c in CONFIGS for n in range(6))
        # A score is what the scorer says of the answer it kept.
        for item in items:
            city = CAPITALS[int(item["item"])][1]
            assert item["score"] == float(city.lower() in item["output"].lower())
        csv = client.get(f"/lab/evaluations/{experiment}/items", params={"format": "csv"})
        assert csv.text.splitlines()[0].startswith("config,item,") and len(csv.text.splitlines()) == 13
        parquet = client.get(f"/lab/evaluations/{experiment}/items", params={"format": "parquet"})
        assert len(pd.read_parquet(io.BytesIO(parquet.content))) == 12
        # Every answer is a kept run of the experiment, the whole request and answer.
        runs = client.get("/lab/runs", params={"experiment": experiment, "limit": 100}).json()["data"]
        assert len(runs) == 12 and {r["mode"] for r in runs} == {"evaluation"}
        assert {r["request_id"] for r in runs} == {i["request_id"] for i in items}
        one_word = next(r for r in runs if r["request"]["messages"][0]["role"] == "system")
        assert one_word["request"]["messages"][0]["content"] == CONFIGS[1]["system"]
        listed = client.get("/lab/evaluations").json()["data"]
        assert any(e["id"] == experiment and e["name"] == "capitals" for e in listed)
        assert client.delete(f"/lab/evaluations/{experiment}").json()["deleted"] is True
        assert client.get(f"/lab/evaluations/{experiment}").status_code == 404
        assert client.get("/lab/runs", params={"experiment": experiment}).json()["data"] == []


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"dataset": {"jsonl": DATASET}, "configs": CONFIGS, "scorer": "bleu"}, 400, "Unknown scorer"),
    ({"dataset": {"jsonl": DATASET}, "configs": [{"model": "no/such"}]}, 404, "does not exist"),
    ({"dataset": {"jsonl": '{"reference": "x"}'}, "configs": CONFIGS}, 400, "needs a prompt"),
    ({"dataset": {"jsonl": DATASET}, "configs": CONFIGS, "scorer": "choice"}, 400, "choices"),
    ({"dataset": {"path": "/nonexistent/d.jsonl"}, "configs": CONFIGS}, 400, "Cannot read"),
    ({"dataset": {"jsonl": DATASET}, "configs": []}, 400, "at least one configuration"),
    ({"dataset": {"jsonl": DATASET}, "configs": CONFIGS, "concurrency": 0}, 400, "concurrency"),
])
def test_a_bad_evaluation_is_refused_in_the_envelope(lab: LabServer, body: dict[str, Any],
                                                      status: int, says: str) -> None:
    with api(lab) as client:
        r = client.post("/lab/evaluations", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]["message"]


def _lm_eval_tasks(folder: Path) -> Path:
    for spec in LM_EVAL.glob("*.yaml"):
        (folder / spec.name).write_text(spec.read_text().replace("DATA", str(LM_EVAL)))
    return folder


@pytest.mark.parametrize("task", ["textgen_mc", "textgen_gen"])
async def test_an_lm_eval_task_scores_as_lm_eval_does(lab: LabServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      task: str) -> None:
    """The same task, by the lab's evaluation and by lm-eval's own `local-completions` client
    over the lab's HTTP API: the same score, item by item."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    state, ours = await asyncio.to_thread(evaluated, lab, {
        "dataset": {"lm_eval_task": task, "include_path": str(_lm_eval_tasks(tmp_path))},
        "configs": [{"model": DEFAULT_MODEL, "name": "lab"}], "route": "completions"})
    theirs = await asyncio.to_thread(run_lm_eval, lab.base_url, lab.token, "local-completions",
                                     task)
    metric = "acc,none" if task == "textgen_mc" else "exact_match,none"
    assert state["summary"][0]["score"] == pytest.approx(theirs["results"][metric])
    assert len(ours) == len(theirs["answers"])
    if task == "textgen_mc":
        answers = [json.loads(line)["answer"] for line in
                   (LM_EVAL / "multiple_choice.jsonl").read_text().splitlines()]
        for mine, upstream, right in zip(ours, theirs["answers"], answers, strict=True):
            chosen = max(range(len(upstream)), key=lambda k: upstream[k][0])
            assert mine["score"] == float(chosen == right)
            assert [ll for ll, _ in json.loads(mine["output"])] == pytest.approx(
                [ll for ll, _ in upstream], abs=1e-3)
    else:
        assert [i["output"] for i in ours] == [a[0] for a in theirs["answers"]]


async def test_the_choice_scorer_picks_what_lm_eval_picks(lab: LabServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab's own multiple-choice scorer on the same questions, written as lm-eval's task
    writes them ("Question: ...\nAnswer:", each choice after a space): the same choice as
    lm-eval's `local-completions` client, item by item."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    docs = [json.loads(line) for line in (LM_EVAL / "multiple_choice.jsonl").read_text().splitlines()]
    dataset = "".join(json.dumps({"prompt": f"Question: {d['question']}\nAnswer:",
                                  "choices": d["choices"], "answer": d["answer"]}) + "\n"
                      for d in docs)
    state, ours = await asyncio.to_thread(evaluated, lab, {
        "dataset": {"jsonl": dataset}, "scorer": "choice", "route": "completions",
        "configs": [{"model": DEFAULT_MODEL, "name": "lab"}]})
    theirs = await asyncio.to_thread(run_lm_eval, lab.base_url, lab.token, "local-completions",
                                     "textgen_mc")
    for mine, upstream, doc in zip(ours, theirs["answers"], docs, strict=True):
        chosen = max(range(len(upstream)), key=lambda k: upstream[k][0])
        assert mine["output"] == doc["choices"][chosen]
        assert mine["score"] == float(chosen == doc["answer"])
    assert state["summary"][0]["score"] == pytest.approx(theirs["results"]["acc,none"])


def test_an_evaluation_resumes_after_the_lab_is_killed(tmp_path: Path) -> None:
    """SIGKILL mid-way (no shutdown at all), then a new lab on the same data directory: the
    evaluation goes on from the scores already written and ends with every item scored once."""
    # The killed lab's claim lapses 5 s after its last renewal; the next lab takes it over then.
    env = {"LAB_DATA_DIR": str(tmp_path), "REDIS_URL": "", "METRICS_PORT": "0",
           "TEXT_GEN_API_TOKEN": "", "EVALUATION_LEASE_SECONDS": "5"}
    questions = [f"Count from {n} to {n + 5}." for n in range(24)]
    dataset = "".join(json.dumps({"prompt": q, "reference": "x"}) + "\n" for q in questions)
    with lab_server(env, wait_model=DEFAULT_MODEL) as first:
        with api(first) as client:
            r = client.post("/lab/evaluations", json={
                "dataset": {"jsonl": dataset}, "scorer": "contains", "concurrency": 1,
                "configs": [{"model": DEFAULT_MODEL, "settings": {"max_tokens": 24}}]})
            experiment = r.json()["id"]
            deadline = time.monotonic() + 300
            while (done := client.get(f"/lab/evaluations/{experiment}").json()["done"]) < 4:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert done < len(questions), "the evaluation ended before the lab could be killed"
        engine = psutil.Process(first.proc.pid).children(recursive=True)
        first.proc.kill()
        first.proc.wait(10)
        for child in engine:  # no shutdown ran: the engine's processes go the same way
            with contextlib.suppress(psutil.Error):
                child.kill()
    with lab_server(env, wait_model=DEFAULT_MODEL) as second, api(second) as client:
        state = finished(client, experiment)
        assert state["status"] == "done", state
        items = client.get(f"/lab/evaluations/{experiment}/items").json()["data"]
    assert sorted(int(i["item"]) for i in items) == list(range(len(questions)))
    assert {i["status"] for i in items} == {"ok"}

