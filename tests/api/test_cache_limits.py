"""Cache, limits and metrics through the running lab (real engine, real Redis)."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from tests.support.processes import (
    INSTANT_MODEL,
    LabServer,
    instant_upstream,
    lab_server,
    redis_server,
)
from textgen import DEFAULT_MODEL

URL = "/v1/completions"


def fresh(prompt: str) -> str:
    return f"[{uuid.uuid4().hex[:8]}] {prompt}"


def post(lab: LabServer, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(lab.base_url + URL, headers={**lab.headers, **headers}, timeout=120,
                      json={"model": DEFAULT_MODEL, **body})


def sse(lab: LabServer, body: dict, **headers: str) -> tuple[httpx.Headers, list[dict]]:
    with httpx.stream("POST", lab.base_url + URL, headers={**lab.headers, **headers}, timeout=120,
                      json={"model": DEFAULT_MODEL, "stream": True, **body}) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        return r.headers, [json.loads(e) for e in events[:-1]]


def metric(lab: LabServer, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{lab.metrics_port}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + "{") and f'model="{DEFAULT_MODEL}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.engine
def test_miss_then_hit_with_identical_body_and_counters(lab: LabServer, redis_url: str) -> None:
    body = {"prompt": fresh("Cache me"), "max_tokens": 12, "temperature": 0}
    hits, misses = metric(lab, "text_cache_hits_total"), metric(lab, "text_cache_misses_total")
    first = post(lab, body)
    second = post(lab, body)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    a, b = first.json(), second.json()
    assert a["choices"] == b["choices"] and a["usage"] == b["usage"]
    assert metric(lab, "text_cache_hits_total") == hits + 1
    assert metric(lab, "text_cache_misses_total") == misses + 1
    keys = redis.Redis.from_url(redis_url).keys("vllm:*")
    assert any(len(k) == len("vllm:") + 64 for k in keys)


@pytest.mark.engine
def test_stream_and_plain_share_an_entry_and_a_hit_replays_as_sse(lab: LabServer) -> None:
    body = {"prompt": fresh("Stream me"), "max_tokens": 16, "temperature": 0, "ignore_eos": True}
    headers, live = sse(lab, {**body, "stream_options": {"include_usage": True}})
    assert headers["X-Cache"] == "MISS"
    plain = post(lab, body)
    assert plain.headers["X-Cache"] == "HIT"
    headers, replayed = sse(lab, {**body, "stream_options": {"include_usage": True}})
    assert headers["X-Cache"] == "HIT"
    texts = [c["choices"][0]["text"] for c in replayed if c["choices"]]
    assert len(texts) > 3, "a hit must stream in several chunks, not one blob"
    assert texts == [c["choices"][0]["text"] for c in live if c["choices"]]
    assert "".join(texts) == plain.json()["choices"][0]["text"]
    assert replayed[-1]["usage"]["completion_tokens"] == 16 and replayed[-1]["choices"] == []


@pytest.mark.engine
def test_cache_control_no_cache_and_no_store(lab: LabServer) -> None:
    body = {"prompt": fresh("Control"), "max_tokens": 4}
    assert post(lab, body, **{"Cache-Control": "no-store"}).headers["X-Cache"] == "MISS"
    assert post(lab, body).headers["X-Cache"] == "MISS"  # nothing was stored
    assert post(lab, body).headers["X-Cache"] == "HIT"
    assert post(lab, body, **{"Cache-Control": "no-cache"}).headers["X-Cache"] == "BYPASS"


@pytest.mark.engine
def test_cache_hits_do_not_count_against_the_limit(lab: LabServer) -> None:
    body = {"prompt": fresh("Limit"), "max_tokens": 3}
    miss = post(lab, body)
    remaining = int(miss.headers["x-ratelimit-remaining-requests"])
    for _ in range(3):
        assert post(lab, body).headers["X-Cache"] == "HIT"
    after = post(lab, {**body, "prompt": fresh("Limit")})
    assert int(after.headers["x-ratelimit-remaining-requests"]) >= remaining - 1
    assert after.headers["x-ratelimit-limit-requests"] == "100000"


@pytest.mark.engine
def test_metrics_cover_tokens_latency_and_no_secrets(lab: LabServer) -> None:
    post(lab, {"prompt": fresh("Metrics"), "max_tokens": 5})
    text = httpx.get(f"http://127.0.0.1:{lab.metrics_port}/metrics").text
    for name in ("text_generation_seconds_bucket", "text_generation_completion_tokens_total",
                 "text_generation_prompt_tokens_total",
                 "text_generation_time_to_first_token_seconds_bucket",
                 "text_generation_requests_in_flight", "text_system_cpu_percent",
                 "text_process_rss_bytes"):
        assert name in text
    assert lab.token not in text and "Metrics" not in text
    assert lab.token not in lab.log()


def test_two_processes_on_one_redis_hold_one_limit() -> None:
    """Two API processes share a limit of 10/min: 40 requests, exactly 10 admitted."""
    with redis_server() as url, instant_upstream() as upstream:
        env = {"REDIS_URL": url, "MODEL": "", "VLLM_ENDPOINT": upstream,
               "RATE_LIMITS": json.dumps({INSTANT_MODEL: 10})}
        with lab_server(env, token=None, wait_model=INSTANT_MODEL) as a, \
                lab_server(env, token=None, wait_model=INSTANT_MODEL) as b:

            def hit(i: int) -> int:
                server = (a, b)[i % 2]
                r = httpx.post(server.base_url + URL, timeout=30,
                               json={"model": INSTANT_MODEL, "prompt": f"limit {i}"})
                return r.status_code

            with ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(hit, range(40)))
    assert statuses.count(429) == 30
    assert statuses.count(200) == 10


def test_redis_down_degrades_health_and_requests_still_answer() -> None:
    with redis_server() as url, instant_upstream() as upstream:
        env = {"REDIS_URL": url, "MODEL": "", "VLLM_ENDPOINT": upstream,
               "RATE_LIMITS": json.dumps({INSTANT_MODEL: 5})}
        with lab_server(env, token=None, wait_model=INSTANT_MODEL) as lab:
            assert httpx.get(lab.base_url + "/health").json()["status"] == "ok"
            redis.Redis.from_url(url).shutdown(nosave=True)
            statuses = [
                httpx.post(lab.base_url + URL, timeout=10,
                           json={"model": INSTANT_MODEL, "prompt": f"down {i}"}).status_code
                for i in range(7)
            ]
            health = httpx.get(lab.base_url + "/health").json()
            metrics = httpx.get(f"http://127.0.0.1:{lab.metrics_port}/metrics").text
    # The in-process window holds the limit while Redis is away; nothing is a 500.
    assert statuses == [200] * 5 + [429] * 2
    assert health["status"] == "degraded"
    assert health["components"]["cache"]["status"] == "degraded"
    assert 'text_cache_errors_total{operation="get"}' in metrics
