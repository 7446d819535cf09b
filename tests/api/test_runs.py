"""Kept runs over the API, on the real engine: a request sent with `X-Lab-Record: 1` is in
GET /lab/runs with its whole answer and the engine's identity; one sent without is not."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.support.processes import LabServer
from textgen import DEFAULT_MODEL

pytestmark = pytest.mark.engine

KEEP = {"X-Lab-Record": "1"}


@pytest.fixture(scope="module")
def client(lab: LabServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=lab.base_url + "/v1", api_key=lab.token, max_retries=0)


def kept(lab: LabServer, **params: Any) -> list[dict[str, Any]]:
    r = httpx.get(lab.base_url + "/lab/runs", headers=lab.headers, params=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def wait_kept(lab: LabServer, text: str, count: int = 1) -> list[dict[str, Any]]:
    """A run is kept once its request has ended on the server, a moment after the client's
    last byte: wait for it, bounded."""
    deadline = time.monotonic() + 30
    while len(runs := kept(lab, text=text)) < count:
        assert time.monotonic() < deadline, f"{count} run(s) with {text!r} never kept: {runs}"
        time.sleep(0.05)
    return runs


def test_a_recorded_stream_is_kept_whole(client: openai.OpenAI, lab: LabServer) -> None:
    marker = uuid.uuid4().hex[:12]
    messages = [{"role": "user", "content": f"Say hello to {marker}."}]
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL, messages=messages, max_tokens=12, temperature=0, stream=True,
        extra_headers=KEEP)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    [run] = wait_kept(lab, marker)
    assert run["object"] == "run" and run["mode"] == "api" and run["route"] == "chat"
    assert run["status"] == "ok" and run["cache"] in ("MISS", "BYPASS")
    assert run["request"] == {"model": DEFAULT_MODEL, "messages": messages, "max_tokens": 12,
                              "temperature": 0}  # as sent, less the transport (stream)
    assert run["text"] == text and run["answer"]["choices"][0]["message"]["content"] == text
    assert run["answer"]["object"] == "chat.completion"
    assert run["completion_tokens"] == 12 and run["prompt_tokens"] > 0
    assert 0 < run["ttft"] <= run["seconds"]
    # vLLM's own queue time of the request: part of the time to its first token.
    assert run["queue"] is not None and 0 <= run["queue"] <= run["ttft"]
    # What the model was: the cache key's identity, vLLM's make and the device.
    assert run["engine"] == "vllm" and run["identity"]
    assert run["vllm_version"].startswith("vllm") and run["device"].startswith("CPU: ")
    one = httpx.get(f"{lab.base_url}/lab/runs/{run['id']}", headers=lab.headers, timeout=10)
    assert one.json() == run


def test_a_cache_hit_and_a_plain_request_are_kept_as_such(client: openai.OpenAI,
                                                           lab: LabServer) -> None:
    marker = uuid.uuid4().hex[:12]
    for _ in range(2):
        response = client.completions.create(model=DEFAULT_MODEL, prompt=f"{marker} one two",
                                             max_tokens=5, temperature=0, extra_headers=KEEP)
    runs = wait_kept(lab, marker, 2)
    assert [r["cache"] for r in runs] == ["HIT", "MISS"]  # newest first
    # A hit never waited in the engine; the plain generation did, for as long as vLLM says.
    assert runs[0]["queue"] is None
    assert runs[1]["queue"] is not None and 0 <= runs[1]["queue"] <= runs[1]["seconds"]
    assert {r["text"] for r in runs} == {response.choices[0].text}
    assert runs[0]["answer"]["id"] != runs[1]["answer"]["id"]


def test_requests_are_not_kept_unless_asked(client: openai.OpenAI, lab: LabServer) -> None:
    marker = uuid.uuid4().hex[:12]
    client.completions.create(model=DEFAULT_MODEL, prompt=f"{marker} a", max_tokens=2,
                              temperature=0)
    client.completions.create(model=DEFAULT_MODEL, prompt=f"{marker} b", max_tokens=2,
                              temperature=0, extra_headers={"X-Lab-Record": "0"})
    client.completions.create(model=DEFAULT_MODEL, prompt=f"{marker} c", max_tokens=2,
                              temperature=0, extra_headers=KEEP)
    [run] = wait_kept(lab, marker)
    assert run["request"]["prompt"] == f"{marker} c"


def test_a_refused_request_is_kept_with_its_error(lab: LabServer) -> None:
    marker = uuid.uuid4().hex[:12]
    r = httpx.post(lab.base_url + "/v1/completions", headers={**lab.headers, **KEEP}, timeout=10,
                   json={"model": "no/such-model", "prompt": marker})
    assert r.status_code == 404
    [run] = wait_kept(lab, marker)
    assert run["status"] == "model_not_found" and run["answer"] is None
    assert run["error"] == r.json()["error"]["message"]


def test_a_stream_cut_by_its_client_is_kept_as_aborted(lab: LabServer) -> None:
    marker = uuid.uuid4().hex[:12]
    with httpx.stream("POST", lab.base_url + "/v1/completions", timeout=60,
                      headers={**lab.headers, **KEEP},
                      json={"model": DEFAULT_MODEL, "prompt": f"{marker} Once upon a time",
                            "max_tokens": 400, "temperature": 0, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # one chunk read, then the client hangs up
    [run] = wait_kept(lab, marker)
    assert run["status"] == "aborted"
    assert len(run["text"]) > 0 and run["completion_tokens"] < 400


def test_runs_are_deleted_and_unknown_ones_are_404(client: openai.OpenAI, lab: LabServer) -> None:
    marker = uuid.uuid4().hex[:12]
    client.completions.create(model=DEFAULT_MODEL, prompt=marker, max_tokens=2, temperature=0,
                              extra_headers=KEEP)
    [run] = wait_kept(lab, marker)
    url = f"{lab.base_url}/lab/runs/{run['id']}"
    assert httpx.delete(url, headers=lab.headers).json() == {"id": run["id"], "object": "run",
                                                              "deleted": True}
    for gone in (httpx.get(url, headers=lab.headers), httpx.delete(url, headers=lab.headers)):
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "run_not_found"
    assert httpx.get(lab.base_url + "/lab/runs").status_code == 401  # the API's token


def test_health_shows_the_run_store(lab: LabServer) -> None:
    store = httpx.get(lab.base_url + "/health").json()["components"]["run_store"]
    assert store["backend"] == "sqlite" and store["status"] == "ok"


def test_a_run_is_sent_again_fresh_and_diffed_against_its_first(client: openai.OpenAI,
                                                                 lab: LabServer) -> None:
    marker = uuid.uuid4().hex[:12]
    client.completions.create(model=DEFAULT_MODEL, prompt=f"{marker} The sea is", max_tokens=8,
                              temperature=0, logprobs=1, extra_headers=KEEP)
    client.completions.create(model=DEFAULT_MODEL, prompt=f"{marker} The sea is", max_tokens=12,
                              temperature=0, logprobs=1, extra_headers=KEEP)
    longer, first = wait_kept(lab, marker, 2)  # newest first
    r = httpx.post(f"{lab.base_url}/lab/runs/{first['id']}/rerun", headers=lab.headers,
                   timeout=120)
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["id"] != first["id"] and again["mode"] == "rerun" and again["cache"] != "HIT"
    assert again["request"] == first["request"] and again["text"] == first["text"]  # greedy

    same = httpx.get(f"{lab.base_url}/lab/runs/{first['id']}/diff/{again['id']}",
                     headers=lab.headers).json()
    assert same["settings"] == [] and same["same_input"] and same["same_output"]
    # Greedy and 4 tokens more: the same start, then what only the longer run has, in the
    # model's own tokens (the runs kept their logprobs).
    more = httpx.get(f"{lab.base_url}/lab/runs/{first['id']}/diff/{longer['id']}",
                     headers=lab.headers).json()
    assert more["settings"] == [{"field": "max_tokens", "a": 8, "b": 12}]
    assert [c["op"] for c in more["output"]] == ["equal", "insert"]
    assert more["output"][0]["a"] == first["text"]
    assert first["text"] + more["output"][1]["b"] == longer["text"]
    assert len(more["output"][1]["b"]) > 0
    gone = httpx.post(f"{lab.base_url}/lab/runs/nope/rerun", headers=lab.headers)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "run_not_found"
