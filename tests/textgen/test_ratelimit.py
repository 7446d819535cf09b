"""The sliding-window limit, in Redis (atomic Lua) and in-process."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis

from textgen.ratelimit import LocalWindow, RateLimiter


async def test_redis_window_admits_exactly_the_limit_under_concurrency(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    limiter = RateLimiter(client)
    model = f"model-{uuid.uuid4().hex}"
    decisions = await asyncio.gather(*(limiter.hit(model, 10) for _ in range(25)))
    admitted = [d for d in decisions if d.admitted]
    assert len(admitted) == 10
    assert sorted(d.remaining for d in admitted) == list(range(10))
    refused = [d for d in decisions if not d.admitted]
    assert all(0 < d.reset_after <= 60 for d in refused)
    await client.aclose()


async def test_two_limiters_on_one_redis_share_the_limit(redis_url: str) -> None:
    a, b = aioredis.from_url(redis_url), aioredis.from_url(redis_url)
    model = f"model-{uuid.uuid4().hex}"
    la, lb = RateLimiter(a), RateLimiter(b)
    results = await asyncio.gather(*(lim.hit(model, 7) for lim in [la, lb] * 10))
    assert sum(d.admitted for d in results) == 7
    await a.aclose()
    await b.aclose()


async def test_zero_means_unlimited() -> None:
    limiter = RateLimiter()
    decisions = [await limiter.hit("m", 0) for _ in range(500)]
    assert all(d.admitted and d.unlimited for d in decisions)


def test_local_window_slides() -> None:
    window = LocalWindow()
    assert [window.hit("m", 2).admitted for _ in range(3)] == [True, True, False]
    # Age the log past the window: both slots free again.
    window._log["m"] = type(window._log["m"])(t - 61 for t in window._log["m"])
    assert window.hit("m", 2).admitted


async def test_falls_back_to_local_window_when_redis_is_down() -> None:
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limiter = RateLimiter(client)
    decisions = [await limiter.hit("m", 3) for _ in range(5)]
    assert [d.admitted for d in decisions] == [True, True, True, False, False]
    assert limiter.health() == "degraded"
    await client.aclose()


async def test_a_lowered_limit_leaves_nothing_remaining_never_less(redis_url: str) -> None:
    window = LocalWindow()
    for _ in range(5):
        window.hit("m", 10)
    lowered = window.hit("m", 3)
    assert not lowered.admitted and lowered.remaining == 0
    client = aioredis.from_url(redis_url)
    limiter = RateLimiter(client)
    model = f"lowered-{uuid.uuid4().hex}"
    for _ in range(5):
        assert (await limiter.hit(model, 10)).admitted
    decision = await limiter.hit(model, 3)
    assert not decision.admitted and decision.remaining == 0
    await client.aclose()
