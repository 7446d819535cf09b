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
    TieredCache,
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
    with pytest.raises(CacheUnavailable):
        await cache.get("vllm:k")
    assert cache.health() == "degraded"
    calls = []

    async def spy() -> None:
        calls.append(1)

    with pytest.raises(CacheUnavailable):  # skipped: the store is not even asked
        await breaker.call(spy())
    assert calls == []
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


async def test_after_the_pause_one_probe_goes_through_and_the_others_are_skipped() -> None:
    breaker = CircuitBreaker("test", base_pause=0.05, max_pause=0.05)
    calls = 0

    async def black_hole() -> None:  # what a Redis that stopped answering feels like
        nonlocal calls
        calls += 1
        await asyncio.sleep(3600)

    async def fail() -> None:
        raise ConnectionError("refused")

    with pytest.raises(CacheUnavailable):
        await breaker.call(fail())
    await asyncio.sleep(0.06)  # the pause is over
    probe = asyncio.create_task(breaker.call(black_hole()))
    await asyncio.sleep(0)
    others = [asyncio.create_task(breaker.call(black_hole())) for _ in range(20)]
    results = await asyncio.gather(*others, return_exceptions=True)
    assert calls == 1, "every caller went through to the dead store"
    assert all(isinstance(r, CacheUnavailable) for r in results)
    probe.cancel()


async def test_an_error_reply_fails_the_call_but_opens_nothing(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    breaker = CircuitBreaker("test", reply_errors=(aioredis.ResponseError,))
    key = f"list-{uuid.uuid4().hex}"
    await client.rpush(key, "x")
    with pytest.raises(CacheUnavailable):  # WRONGTYPE: GET on a list
        await breaker.call(client.get(key))
    assert breaker.health() == "ok"
    assert await breaker.call(client.ping()) is True
    await client.aclose()


async def test_health_probes_the_limiters_breaker_too() -> None:
    from textgen import Settings, TextGen

    with redis_server() as url:
        tg = TextGen(Settings(MODEL="", VLLM_ENDPOINT="", METRICS_PORT=0, REDIS_URL=url))
        await tg.start()
        try:
            async def fail() -> None:
                raise ConnectionError("refused")

            with pytest.raises(CacheUnavailable):
                await tg.limiter.breaker.call(fail())
            assert tg.health()["rate_limiter"]["status"] == "degraded"
            await asyncio.sleep(0.6)  # the breaker's first pause
            await tg.probe_dependencies()  # what GET /health does: Redis is up
            assert tg.health()["rate_limiter"]["status"] == "ok"
        finally:
            await tg.close()


async def test_the_local_tier_serves_hot_entries_while_redis_is_down() -> None:
    with redis_server() as url:
        client = aioredis.from_url(url, socket_timeout=0.25, socket_connect_timeout=0.25)
        remote = RedisCache(client, ttl_seconds=60, breaker=CircuitBreaker("test"))
        cache = TieredCache(MemoryCache(max_entries=2, ttl_seconds=60), remote)
        await cache.set("vllm:hot", sample_answer())
        assert 50 < await client.ttl("vllm:hot") <= 60  # written through to Redis
        await client.set("vllm:warm", dump_answer(sample_answer()), ex=30)  # another replica's
        assert await cache.get("vllm:warm") == sample_answer()  # from Redis, kept locally
    # redis-server is gone now: what the local tier holds is still served
    assert await cache.get("vllm:hot") == sample_answer()
    assert await cache.get("vllm:warm") == sample_answer()
    with pytest.raises(CacheUnavailable):  # not held locally: the caller bypasses the cache
        await cache.get("vllm:cold")
    assert cache.health() == "degraded"
    await client.aclose()


async def test_a_local_copy_never_outlives_its_redis_ttl(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    cache = TieredCache(MemoryCache(max_entries=8, ttl_seconds=3600),
                        RedisCache(client, ttl_seconds=3600, breaker=CircuitBreaker("test")))
    key = f"vllm:short-{uuid.uuid4().hex}"
    await client.set(key, dump_answer(sample_answer()), px=300)  # almost expired in Redis
    assert await cache.get(key) == sample_answer()
    await asyncio.sleep(0.4)
    await client.delete(key)
    assert await cache.get(key) is None  # the local copy expired with Redis' TTL
    await client.aclose()
