"""docker/compose.yaml brought up for real: API, Redis and Prometheus, with vLLM on the host.

`docker compose` (v2) runs compose.yaml with tests/deploy/compose.standin.yaml on top, which
swaps in stand-ins only for what cannot run here: Redis and Prometheus images built from
Debian's packages, and in place of the GPU vLLM server a relay to the real vLLM CPU server on
the host. The API image is built by Compose from compose.yaml's build section. Grafana is not
started (no Debian package to stand in for it): its provisioning stays validated only
(test_deploy_compose.py).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest

from tests.support.tcp_relay import tcp_relay
from tests.support.upstreams import VllmServer

from .docker_engine import Docker, free_port, standin, wait_listed
from .support import DOCKER, ROOT

pytestmark = [pytest.mark.docker, pytest.mark.engine]

OVERRIDE = ROOT / "tests" / "deploy" / "compose.standin.yaml"
PROJECT = "textgen-test"  # not compose.yaml's own `textgen`: a user's stack stays untouched
TOKEN = "seu-token"
MODEL = VllmServer.model
SERVICES = ("api", "prometheus")  # and what they depend on: redis, vllm


@dataclass
class Stack:
    api: str
    prometheus: str
    redis_password: str
    compose: Any  # docker compose ... with the project's files and variables
    docker: Docker

    def post(self, prompt: str, max_tokens: int = 8) -> httpx.Response:
        body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        return httpx.post(f"{self.api}/v1/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {TOKEN}"})

    def redis_cli(self, *args: str, auth: bool = True) -> str:
        """redis-cli in the compose Redis container (its REDISCLI_AUTH holds the password)."""
        command = ["redis-cli", *args] if auth else ["env", "-u", "REDISCLI_AUTH", "redis-cli",
                                                     *args]
        return self.compose("exec", "-T", "redis", *command).stdout.strip()


@pytest.fixture(scope="module")
def stack(compose_v2: Docker, api_image: str, standin_python: str,
          vllm_server: VllmServer) -> Iterator[Stack]:
    docker = compose_v2
    api_port, prometheus_port = free_port(), free_port()
    password = secrets.token_hex(8)
    vllm_port = int(vllm_server.url.rsplit(":", 1)[1])
    with tcp_relay(docker.bridge_gateway(), ("127.0.0.1", vllm_port)) as relay:
        env = {
            "API_TOKEN": TOKEN,
            "REDIS_PASSWORD": password,
            "TEXTGEN_TEST_API_IMAGE": api_image,
            "TEXTGEN_TEST_API_PORT": str(api_port),
            "TEXTGEN_TEST_PROMETHEUS_PORT": str(prometheus_port),
            "TEXTGEN_TEST_STANDIN_PYTHON": standin_python,
            "TEXTGEN_TEST_STANDIN_REDIS": standin(docker, "redis"),
            "TEXTGEN_TEST_STANDIN_PROMETHEUS": standin(docker, "prometheus"),
            "TEXTGEN_TEST_STANDIN_VLLM": standin(docker, "vllm"),
            "TEXTGEN_TEST_VLLM_RELAY_PORT": str(relay.server_address[1]),
        }
        # Nothing of the caller's shell or a docker/.env reaches compose.yaml but these.
        env |= {"TEXT_GEN_API_TOKEN": "", "VLLM_MODEL": "", "HF_TOKEN": ""}
        run = partial(docker, "compose", "--project-name", PROJECT,
                      "--file", str(DOCKER / "compose.yaml"), "--file", str(OVERRIDE),
                      env=env, cwd=ROOT)
        try:
            run("up", "--detach", "--build", *SERVICES, timeout=600)
            running = Stack(f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prometheus_port}",
                            password, run, docker)
            wait_listed(running.api, TOKEN, MODEL, partial(_stopped, running))
            yield running
        finally:
            logs = run("logs", "--no-color", "--timestamps", check=False)
            (ROOT / "test-artifacts").mkdir(exist_ok=True)
            (ROOT / "test-artifacts" / "compose.log").write_text(logs.stdout + logs.stderr)
            run("down", "--volumes", "--remove-orphans", "--timeout", "20", check=False,
                timeout=120)


def _stopped(stack: Stack) -> str | None:
    """None while the API container runs (`restart: unless-stopped` hides a crash loop from ps)."""
    (api,) = stack.compose("ps", "--all", "--quiet", "api").stdout.split()
    if stack.docker.inspect(api, "{{.State.Running}} {{.RestartCount}}") == "true 0":
        return None
    return stack.compose("logs", "--no-color", "api", check=False).stdout[-3000:]


def _cache_keys(stack: Stack) -> set[str]:
    keys = stack.redis_cli("--scan", "--pattern", "vllm:*").split()
    return {k for k in keys if not k.startswith("vllm:ratelimit:")}


def test_the_api_answers_through_the_published_port(stack: Stack) -> None:
    health = httpx.get(f"{stack.api}/health", timeout=10).json()
    assert health["status"] == "ok", health
    assert health["components"]["cache"] == {"backend": "redis", "status": "ok"}
    (backend,) = health["components"]["remote_backends"]["backends"]
    assert backend["url"] == "http://vllm:8000" and backend["status"] == "up"  # compose's own
    answer = stack.post("Escreva um poema sobre o mar", max_tokens=24)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["text"].strip()
    assert httpx.get(f"{stack.api}/v1/models", timeout=10).status_code == 401  # API_TOKEN set


def test_a_repeated_request_is_a_cache_hit_stored_in_the_compose_redis(stack: Stack) -> None:
    before = _cache_keys(stack)
    prompt = f"A cache test {secrets.token_hex(4)}:"
    first, second = stack.post(prompt), stack.post(prompt)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.json()["choices"][0]["text"] == second.json()["choices"][0]["text"]
    (key,) = _cache_keys(stack) - before  # one new entry, in compose's Redis
    ttl = int(stack.redis_cli("TTL", key))
    assert 3500 < ttl <= 3600, "compose.yaml's CACHE_TTL_SECONDS=3600"


def test_redis_runs_with_its_password_and_memory_policy(stack: Stack) -> None:
    assert stack.redis_cli("CONFIG", "GET", "maxmemory").split() == ["maxmemory", "2147483648"]
    assert stack.redis_cli("CONFIG", "GET", "maxmemory-policy").split() == [
        "maxmemory-policy", "allkeys-lru"]
    assert stack.redis_cli("--no-auth-warning", "-a", stack.redis_password, "PING",
                           auth=False) == "PONG"
    assert "NOAUTH" in stack.redis_cli("PING", auth=False)
    (redis_id,) = stack.compose("ps", "--quiet", "redis").stdout.split()
    health = json.loads(stack.docker.inspect(redis_id, "{{json .State.Health}}"))
    assert health["Status"] == "healthy", health  # compose.yaml's redis-cli health check


def test_prometheus_scrapes_the_api_metrics(stack: Stack) -> None:
    prompt = f"A scrape test {secrets.token_hex(4)}:"
    assert [stack.post(prompt).headers["x-cache"] for _ in range(2)] == ["MISS", "HIT"]
    query = 'text_cache_hits_total{job="text-generator"}'
    found: list[dict[str, Any]] = []
    health: dict[str, str] = {}
    deadline = time.monotonic() + 60  # prometheus.yml scrapes every 15 s, each target in turn
    while time.monotonic() < deadline:
        answer = httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": query},
                           timeout=10).json()
        assert answer["status"] == "success", answer
        found = answer["data"]["result"]
        targets = httpx.get(f"{stack.prometheus}/api/v1/targets", timeout=10).json()
        health = {t["labels"]["job"]: t["health"] for t in targets["data"]["activeTargets"]}
        if found and "unknown" not in health.values():  # every target scraped once
            break
        time.sleep(2)
    (series,) = found
    assert series["metric"]["instance"] == "api:8001" and series["metric"]["model"] == MODEL
    assert float(series["value"][1]) >= 1
    # vllm:8000/metrics is the real vLLM server's own (through the stand-in relay); the lab
    # target is down unless the `lab` profile runs.
    assert health == {"text-generator": "up", "vllm": "up", "prometheus": "up",
                      "text-generator-lab": "down"}
