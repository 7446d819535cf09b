"""The seed's Docker section, run for real: `docker build`, `docker run`, then its curl example.

docker/Dockerfile is built on the Python stand-in (docker_engine.py says why a stand-in) and run
as the seed runs it, `-e API_TOKEN=seu-token -e VLLM_ENDPOINT=...`, with VLLM_ENDPOINT naming a
real vLLM CPU server on this host. The container uses the host's network, so every byte stays on
loopback; in place of `-p 8006:8000` the ports are free ones given as API_PORT and METRICS_PORT
(8000, 8001 and 8006 may be taken on a shared machine).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.upstreams import VllmServer

from .docker_engine import Docker, free_port, wait_listed
from .support import ROOT, SEED_METRICS

# Real images and a real vLLM server: ~1 min warm, a few more on a machine's first run.
pytestmark = [pytest.mark.docker, pytest.mark.engine]

TOKEN = "seu-token"
MODEL = VllmServer.model
SEED_MODEL = "mistralai/Mistral-7B-v0.1"  # in the catalog; not served by this vLLM
# The seed's curl example body, as written.
SEED_BODY = {
    "model": SEED_MODEL,
    "prompt": "Escreva um poema sobre o mar",
    "max_tokens": 100,
    "temperature": 0.7,
}
DOCKER_STOP_GRACE = 10  # `docker stop`'s default; the seed's `docker run` sets no other


@dataclass
class Container:
    name: str
    api: str
    metrics: str
    docker: Docker

    def running(self) -> bool:
        return self.docker.inspect(self.name, "{{.State.Running}}") == "true"


def curl(url: str, body: dict[str, object], token: str | None = TOKEN) -> tuple[int, dict, str]:
    """The seed's curl command line; returns the status, the JSON body and the headers."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    result = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{url}/v1/completions",
         "-H", "Content-Type: application/json", *auth,
         "-d", json.dumps(body), "--dump-header", "/dev/stderr", "--write-out", "\n%{http_code}"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    payload, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(payload), result.stderr


def samples(metrics_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{metrics_url}/metrics", timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (absent: 0)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= ls)


@pytest.fixture(scope="module")
def container(docker: Docker, api_image: str, vllm_server: VllmServer) -> Iterator[Container]:
    api_port, metrics_port = free_port(), free_port()
    name = f"textgen-test-run-{api_port}"
    docker("run", "--detach", "--name", name, "--network", "host",
           "-e", f"API_TOKEN={TOKEN}",
           "-e", f"VLLM_ENDPOINT={vllm_server.url}/v1/completions",  # the seed's form
           "-e", f"API_PORT={api_port}", "-e", f"METRICS_PORT={metrics_port}",
           # The host's network: keep both listeners on loopback.
           "-e", "API_HOST=127.0.0.1", "-e", "METRICS_HOST=127.0.0.1",
           api_image)
    running = Container(name, f"http://127.0.0.1:{api_port}",
                        f"http://127.0.0.1:{metrics_port}", docker)
    try:
        wait_listed(running.api, TOKEN, MODEL, partial(_stopped, running))
        yield running
    finally:
        logs = docker("logs", name, check=False)
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        (ROOT / "test-artifacts" / f"{name}.log").write_text(logs.stdout + logs.stderr)
        docker("rm", "--force", name, check=False)


def _stopped(c: Container) -> str | None:
    if c.running():
        return None
    logs = c.docker("logs", c.name, check=False)
    return logs.stdout[-3000:] + logs.stderr[-3000:]


def test_the_process_runs_as_uid_10001(container: Container) -> None:
    assert container.docker.inspect(container.name, "{{.Config.User}}") == "10001:10001"
    pid = container.docker.inspect(container.name, "{{.State.Pid}}")
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert fields["Uid"].split() == ["10001"] * 4, "real, effective, saved and fs UID"
    assert fields["Gid"].split() == ["10001"] * 4
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [
        b"/opt/venv/bin/textgen", b"serve"]


def test_the_seeds_curl_example_generates_text(container: Container) -> None:
    status, answer, headers = curl(container.api, SEED_BODY | {"model": MODEL})
    assert status == 200, answer
    assert answer["object"] == "text_completion" and answer["model"] == MODEL
    (choice,) = answer["choices"]
    assert choice["text"].strip(), "no text generated"
    assert 0 < answer["usage"]["completion_tokens"] <= SEED_BODY["max_tokens"]
    assert choice["finish_reason"] in ("stop", "length")
    assert "x-cache: miss" in headers.lower()


def test_the_seeds_model_and_a_missing_token_are_refused_as_openai_errors(
        container: Container) -> None:
    # The seed's example as written asks for Mistral-7B, which this vLLM does not serve.
    status, answer, _ = curl(container.api, SEED_BODY)
    assert status == 404, answer
    assert SEED_MODEL in answer["error"]["message"]
    status, answer, _ = curl(container.api, SEED_BODY | {"model": MODEL}, token=None)
    assert status == 401 and answer["error"]["type"], answer


def test_metrics_on_the_metrics_port_count_the_seeds_series(container: Container) -> None:
    before = samples(container.metrics)
    body = {"model": MODEL, "prompt": "Metrics in a container:", "max_tokens": 8,
            "temperature": 0}
    first, second = curl(container.api, body), curl(container.api, body)
    assert (first[0], second[0]) == (200, 200)
    assert "x-cache: miss" in first[2].lower() and "x-cache: hit" in second[2].lower()
    assert curl(container.api, SEED_BODY)[0] == 404
    after = samples(container.metrics)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    names = {name for name, _ in after}
    for metric in SEED_METRICS:  # a histogram's samples are its _bucket, _count and _sum
        assert metric in names or f"{metric}_count" in names, f"{metric} is not exported"
    assert delta("text_generation_seconds_count", model=MODEL) == 1  # the miss only
    assert delta("text_cache_misses_total", model=MODEL) == 1
    assert delta("text_cache_hits_total", model=MODEL) == 1
    assert delta("text_generation_errors_total", model=SEED_MODEL) == 1


def test_dockers_health_check_reports_healthy(container: Container) -> None:
    """The image's own HEALTHCHECK (first probe 30 s after the start: the tests above overlap it)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        health = json.loads(container.docker.inspect(container.name, "{{json .State.Health}}"))
        assert health["Status"] in ("starting", "healthy"), health
        if health["Status"] == "healthy":
            break
        time.sleep(1)
    assert health["Status"] == "healthy", health
    assert health["Log"] and health["Log"][-1]["ExitCode"] == 0
    assert health["FailingStreak"] == 0


def test_docker_stop_ends_it_within_the_grace_with_no_error(container: Container) -> None:
    started = time.monotonic()
    container.docker("stop", container.name, timeout=DOCKER_STOP_GRACE + 30)
    took = time.monotonic() - started
    state = json.loads(container.docker.inspect(container.name, "{{json .State}}"))
    assert took < DOCKER_STOP_GRACE, f"docker stop took {took:.1f} s: SIGKILLed at the grace"
    assert not state["Running"] and not state["OOMKilled"]
    # PID 1 ends on SIGTERM: 0 once it has shut down cleanly (143 if it re-raises the signal).
    assert state["ExitCode"] in (0, 143), state
    logs = container.docker("logs", container.name)
    output = logs.stdout + logs.stderr
    assert "Traceback" not in output, output[-3000:]
    assert "Application shutdown complete" in output, output[-3000:]
