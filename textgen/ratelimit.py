"""Per-model request limits over a sliding 60-second window.

In Redis the check-and-record is one Lua script, so every API replica sharing that Redis holds
one limit together, timed by Redis' own clock. Without Redis (or while it is down) an
in-process window of the same shape takes over.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from .cache import CacheUnavailable, CircuitBreaker

WINDOW_SECONDS = 60.0
KEY_PREFIX = "vllm:ratelimit:"

# Sliding-window log: drop entries older than the window, admit when fewer than `limit`
# remain. Returns {admitted, remaining, ms until the oldest entry leaves the window}.
_SLIDING_WINDOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local admitted = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  count = count + 1
  admitted = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = window
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
return {admitted, limit - count, reset}
"""


@dataclass(frozen=True, slots=True)
class RateDecision:
    admitted: bool
    limit: int
    remaining: int
    # Seconds until a slot frees (the oldest admitted request leaves the window).
    reset_after: float

    @property
    def unlimited(self) -> bool:
        return self.limit <= 0


UNLIMITED = RateDecision(admitted=True, limit=0, remaining=0, reset_after=0.0)


class LocalWindow:
    """The same sliding window, in this process only."""

    def __init__(self) -> None:
        self._log: dict[str, deque[float]] = defaultdict(deque)

    def hit(self, model: str, limit: int) -> RateDecision:
        now = time.monotonic()
        log = self._log[model]
        while log and log[0] <= now - WINDOW_SECONDS:
            log.popleft()
        admitted = len(log) < limit
        if admitted:
            log.append(now)
        reset = (log[0] + WINDOW_SECONDS - now) if log else WINDOW_SECONDS
        # A limit lowered below what the window holds leaves nothing remaining, not less.
        return RateDecision(admitted, limit, max(limit - len(log), 0), max(reset, 0.0))


class RateLimiter:
    """Admits or refuses a request for a model; Redis-backed when a client is given."""

    def __init__(self, redis: Any | None = None, breaker: CircuitBreaker | None = None) -> None:
        self._redis = redis
        self.breaker = breaker or CircuitBreaker("redis rate limiter")
        self._script = redis.register_script(_SLIDING_WINDOW_LUA) if redis is not None else None
        self._local = LocalWindow()
        self.backend = "redis" if redis is not None else "memory"

    async def hit(self, model: str, limit: int) -> RateDecision:
        if limit <= 0:
            return UNLIMITED
        if self._script is not None:
            try:
                admitted, remaining, reset_ms = await self.breaker.call(
                    self._script(
                        keys=[KEY_PREFIX + model],
                        args=[limit, int(WINDOW_SECONDS * 1000), uuid.uuid4().hex],
                    )
                )
            except CacheUnavailable:
                pass  # Redis is down: hold the limit in this process until it is back
            else:
                return RateDecision(bool(admitted), limit, max(int(remaining), 0),
                                    int(reset_ms) / 1000)
        return self._local.hit(model, limit)

    def health(self) -> str:
        return self.breaker.health() if self._redis is not None else "ok"
