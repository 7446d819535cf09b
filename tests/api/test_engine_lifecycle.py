"""The model lifecycle with the real engine: eviction mid-stream, a model that cannot load,
unloading without stalling the server, and an engine that dies.

One `textgen serve` with one model slot; the second model is the embedded SmolLM2 under a
second id (MODEL_PATHS to the same folder), so a switch costs one engine start, not a download
or a conversion. The fast, fake-engine side of each case: tests/textgen/test_lifecycle.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.support.processes import LabServer, lab_server
from textgen import DEFAULT_MODEL, Settings, embedded

pytestmark = pytest.mark.engine

COPY = "local/smollm2-copy"
BROKEN = "local/broken"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    folder = embedded.prepare(DEFAULT_MODEL, Settings().MODEL_CACHE_DIR)
    broken = tmp_path_factory.mktemp("broken")
    (broken / "config.json").write_text('{"architectures": ["NoSuchModelForCausalLM"]}')
    env = {"MAX_LOADED_MODELS": "1", "UNLOAD_DRAIN_SECONDS": "1",
           "MODEL_PATHS": json.dumps({COPY: str(folder), BROKEN: str(broken)}),
           "RATE_LIMITS": json.dumps({DEFAULT_MODEL: 0, COPY: 0})}
    with lab_server(env, wait_model=DEFAULT_MODEL) as server:
        yield server


def api(lab: LabServer) -> httpx.Client:
    return httpx.Client(base_url=lab.base_url, headers=lab.headers, timeout=300)


def status(lab: LabServer, model: str) -> str:
    with api(lab) as client:
        return str(client.get(f"/v1/models/{model}").json()["status"])


def in_flight(lab: LabServer) -> float:
    text = httpx.get(f"http://127.0.0.1:{lab.metrics_port}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("text_generation_requests_in_flight{"))


def test_loading_another_model_ends_a_running_stream_with_an_error(lab: LabServer) -> None:
    body = {"model": DEFAULT_MODEL, "prompt": "Count: 1, 2, 3,", "max_tokens": 1500,
            "ignore_eos": True, "stream": True}
    events: list[str] = []
    with api(lab) as client, client.stream("POST", "/v1/completions", json=body,
                                           headers={"Cache-Control": "no-store"}) as response:
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                events.append(line)
            if len(events) == 3:
                break
        # One slot: loading the other model evicts this one while it streams.
        loader = threading.Thread(target=lambda: api(lab).post(f"/v1/models/{COPY}/load"))
        loader.start()
        events += [line for line in lines if line.startswith("data: ")]
        loader.join(300)
    assert events[-1] == "data: [DONE]", "the stream did not end"
    error = json.loads(events[-2][6:])["error"]
    assert error["code"] == "generation_interrupted" and "make room" in error["message"]
    assert len(events) < 1000, "the stream ran to its end instead of being ended"
    assert status(lab, COPY) == "loaded" and status(lab, DEFAULT_MODEL) == "not_loaded"
    assert in_flight(lab) == 0


def test_a_model_that_cannot_load_leaves_the_loaded_one_serving(lab: LabServer) -> None:
    with api(lab) as client:
        assert client.get(f"/v1/models/{COPY}").json()["status"] == "loaded"
        refused = client.post(f"/v1/models/{BROKEN}/load")
        assert refused.status_code == 500 and refused.json()["error"]["code"] == "model_load_failed"
        assert "could not be loaded" in refused.json()["error"]["message"]
        broken = client.get(f"/v1/models/{BROKEN}").json()
        assert broken["status"] == "error" and broken["reason"]
        answer = client.post("/v1/completions", json={"model": COPY, "prompt": "Hello",
                                                      "max_tokens": 3})
        assert answer.status_code == 200, answer.text


def test_an_unload_does_not_stall_the_server(lab: LabServer) -> None:
    latencies: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=lab.base_url, timeout=30) as client:
            while not done.is_set():
                started = time.monotonic()
                client.get("/health")
                latencies.append(time.monotonic() - started)
                time.sleep(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    started = time.monotonic()
    with api(lab) as client:
        assert client.post(f"/v1/models/{COPY}/unload").json()["status"] == "not_loaded"
    took = time.monotonic() - started
    done.set()
    prober.join(30)
    # vLLM's shutdown joins its engine-core process (seconds); /health answered meanwhile.
    assert took > 1.0 and len(latencies) > 5
    assert max(latencies) < 1.0, f"/health stalled {max(latencies):.2f} s during the unload"


def test_an_engine_that_dies_is_seen_and_a_load_brings_it_back(lab: LabServer) -> None:
    with api(lab) as client:
        assert client.post(f"/v1/models/{DEFAULT_MODEL}/load").json()["status"] == "loaded"
        assert httpx.get(lab.base_url + "/ready").status_code == 200
        cores = [p for p in psutil.Process(lab.proc.pid).children(recursive=True)
                 if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name()]
        assert cores, "no engine-core process found"
        for core in cores:
            core.kill()  # what a crash or the OOM killer does
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = httpx.get(lab.base_url + "/health")
            if health.status_code == 503:
                break
            time.sleep(0.5)
        assert health.status_code == 503 and health.json()["status"] == "error"
        assert health.json()["components"]["engines"]["died"] == [DEFAULT_MODEL]
        ready = httpx.get(lab.base_url + "/ready")
        assert ready.status_code == 503 and "died" in " ".join(ready.json()["reasons"])
        assert client.get(f"/v1/models/{DEFAULT_MODEL}").json()["status"] == "error"
        refused = client.post("/v1/completions", json={"model": DEFAULT_MODEL, "prompt": "x"})
        assert refused.status_code == 503

        assert client.post(f"/v1/models/{DEFAULT_MODEL}/load").json()["status"] == "loaded"
        assert httpx.get(lab.base_url + "/health").json()["status"] == "ok"
        assert httpx.get(lab.base_url + "/ready").status_code == 200
        answer = client.post("/v1/completions", json={"model": DEFAULT_MODEL, "prompt": "Hi",
                                                      "max_tokens": 3})
        assert answer.status_code == 200, answer.text

