"""Cache stores: the in-process LRU, real Redis, and a Redis that goes away and comes back."""

from __future__ import annotations

import asyncio
import subprocess
import uuid

import pytest
import redis.asyncio as aioredis

from tests.support.processes import redis_server
from textgen import Answer
from textgen.cache import (
    CacheUnavailable,
    CircuitBreaker,
    MemoryCache,
    RedisCache,
    dump_answer,
    load_answer,
)


def sample_answer() -> Answer:
    chunks = [
        {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
         "choices": [{"index": 0, "text": "o", "logprobs": None, "finish_reason": None}]},
        {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
         "choices": [{"index": 0, "text": " mar", "logprobs": None, "finish_reason": "stop"}]},
        {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [],
         "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}},
    ]
    return Answer("completions", "chunks", chunks)


def test_answer_round_trips_through_json() -> None:
    answer = sample_answer()
    assert load_answer(dump_answer(answer)) == answer


async def test_memory_cache_is_a_bounded_lru_with_ttl() -> None:
    cache = MemoryCache(max_entries=2, ttl_seconds=60)
    c = sample_answer()
    await cache.set("a", c)
    await cache.set("b", c)
    assert await cache.get("a") == c  # touch a: b is now least recently used
    await cache.set("c", c)
    assert await cache.get("b") is None
    assert await cache.get("a") == c and await cache.get("c") == c
    expired = MemoryCache(max_entries=2, ttl_seconds=-1)
    await expired.set("a", c)
    assert await expired.get("a") is None


async def test_redis_cache_stores_with_ttl(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    cache = RedisCache(client, ttl_seconds=3600, breaker=CircuitBreaker("test"))
    key = f"vllm:test-{uuid.uuid4().hex}"
    assert await cache.get(key) is None
    await cache.set(key, sample_answer())
    assert await cache.get(key) == sample_answer()
    assert 3590 < await client.ttl(key) <= 3600
    await client.aclose()


async def test_redis_down_is_bypassed_quickly_and_recovers_by_itself() -> None:
    with redis_server() as url:
        client = aioredis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        breaker = CircuitBreaker("test", base_pause=0.2, max_pause=0.4)
        cache = RedisCache(client, ttl_seconds=60, breaker=breaker)
        await cache.set("vllm:k", sample_answer())
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    # redis-server is stopped now
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(CacheUnavailable):
        await cache.get("vllm:k")
    assert cache.health() == "degraded"
    with pytest.raises(CacheUnavailable):  # skipped without touching the network
        await cache.get("vllm:k")
    assert loop.time() - started < 1.0
    # Redis comes back on the same port: the breaker's probe closes it.
    command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: ASYNC220 - never waited on
    try:
        for _ in range(50):
            await asyncio.sleep(0.1)
            try:
                await cache.set("vllm:k2", sample_answer())
                break
            except CacheUnavailable:
                continue
        assert cache.health() == "ok"
        assert await cache.get("vllm:k2") == sample_answer()
    finally:
        await client.aclose()
        proc.terminate()
        proc.wait()
