"""Faults in a dependency, with real processes: Redis killed and restarted under load.

`textgen serve` with Redis (cache and limits) in front of benchmarks/instant_upstream.py (a
fake OpenAI server that answers at once, so the load is the lab's own), 8 clients asking for
a few hot prompts and some new ones, and a real `redis-server` killed with SIGKILL mid-way.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import redis

from tests.support.processes import (
    INSTANT_MODEL,
    _wait_port,
    free_port,
    instant_upstream,
    lab_server,
)

HOT = [f"hot prompt {i}" for i in range(4)]


@contextmanager
def killable_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, 10)
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def test_redis_killed_and_back_under_load() -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with instant_upstream() as upstream, killable_redis(port) as first_redis:
        env = {"REDIS_URL": url, "MODEL": "", "VLLM_ENDPOINT": upstream,
               "RATE_LIMITS": json.dumps({INSTANT_MODEL: 100_000}),
               "REDIS_TIMEOUT_SECONDS": "0.25"}
        with lab_server(env, token=None, wait_model=INSTANT_MODEL) as lab:
            api = httpx.Client(base_url=lab.base_url, timeout=10)
            for prompt in HOT:  # fill the hot entries (and this replica's local tier)
                api.post("/v1/completions", json={"model": INSTANT_MODEL, "prompt": prompt})
            phase = "before"
            seen: list[tuple[str, int, str]] = []
            stop = threading.Event()

            def client(n: int) -> None:
                with httpx.Client(base_url=lab.base_url, timeout=10) as c:
                    i = 0
                    while not stop.is_set():
                        prompt = HOT[i % len(HOT)] if i % 3 else f"new {n} {i}"
                        r = c.post("/v1/completions",
                                   json={"model": INSTANT_MODEL, "prompt": prompt})
                        seen.append((phase, r.status_code, r.headers.get("x-cache", "")))
                        i += 1

            threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
            for t in threads:
                t.start()
            time.sleep(1.5)
            phase = "down"
            first_redis.kill()  # SIGKILL: no goodbye to the clients
            first_redis.wait(10)
            time.sleep(3)
            health = api.get("/health").json()
            phase = "back"
            with killable_redis(port):
                back = time.monotonic()
                # Redis is empty after its restart: caching through it resumes by itself.
                stored = None
                while time.monotonic() - back < 5:
                    keys = redis.Redis(port=port).keys("vllm:*")
                    if any(not k.startswith(b"vllm:ratelimit:") for k in keys):
                        stored = time.monotonic() - back
                        break
                    time.sleep(0.1)
                healthy = None
                while time.monotonic() - back < 8:
                    if api.get("/health").json()["components"]["cache"]["status"] == "ok":
                        healthy = time.monotonic() - back
                        break
                    time.sleep(0.1)
                stop.set()
                for t in threads:
                    t.join(30)
    by_phase = {p: Counter((status, cache) for ph, status, cache in seen if ph == p)
                for p in ("before", "down", "back")}
    statuses = Counter(status for _, status, _ in seen)
    assert set(statuses) == {200}, statuses  # nothing failed: no 5xx, no 429
    assert by_phase["down"][(200, "HIT")] > 20, by_phase  # hot keys served from the local tier
    assert by_phase["down"][(200, "BYPASS")] > 0  # the rest answered, uncached
    assert health["status"] == "degraded" and health["components"]["cache"]["status"] == "degraded"
    assert stored is not None, "nothing was stored in Redis within 5 s of its return"
    assert healthy is not None and healthy < 5
