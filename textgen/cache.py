"""Response cache: Redis when configured, an in-process LRU otherwise.

The key hashes everything that changes the output (model, prompts or messages, every sampling
option after defaults are applied) and nothing that does not (`stream`, `user`), so a streamed
and a plain request share one entry.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson

from .types import Choice, Completion, GenerationRequest, TokenLogprob, Usage

log = logging.getLogger(__name__)

KEY_PREFIX = "vllm:"
_KEY_VERSION = 1


def cache_key(request: GenerationRequest) -> str:
    """Redis key of a request: `vllm:` + sha256 of its output-affecting fields."""
    payload = {
        "v": _KEY_VERSION,
        "model": request.model,
        "prompts": list(request.prompts),
        "messages": [[m.role, m.content] for m in request.messages]
        if request.messages is not None
        else None,
        "options": request.options.as_dict(),
    }
    digest = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{KEY_PREFIX}{digest}"


def dump_completion(completion: Completion) -> bytes:
    return orjson.dumps(completion)


def load_completion(raw: bytes) -> Completion:
    data: dict[str, Any] = orjson.loads(raw)
    choices = [
        Choice(
            index=c["index"],
            text=c["text"],
            finish_reason=c["finish_reason"],
            logprobs=None
            if c["logprobs"] is None
            else [
                None
                if lp is None
                else TokenLogprob(lp["token"], lp["logprob"], tuple(map(tuple, lp["top"])))
                for lp in c["logprobs"]
            ],
        )
        for c in data["choices"]
    ]
    return Completion(
        model=data["model"],
        choices=choices,
        usage=Usage(**data["usage"]),
        pieces=[(int(i), str(t), int(k)) for i, t, k in data["pieces"]],
    )


class CacheUnavailable(Exception):
    """The cache store failed; the caller bypasses the cache for this request."""


class ResponseCache(Protocol):
    kind: str

    async def get(self, key: str) -> Completion | None: ...

    async def set(self, key: str, completion: Completion) -> None: ...

    def health(self) -> str: ...


class MemoryCache:
    """Bounded LRU with a TTL, for a lab without Redis."""

    kind = "memory"

    def __init__(self, max_entries: int, ttl_seconds: float) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_seconds

    async def get(self, key: str) -> Completion | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, raw = entry
        if expires < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return load_completion(raw)

    async def set(self, key: str, completion: Completion) -> None:
        if self._max <= 0:
            return
        self._entries[key] = (time.monotonic() + self._ttl, dump_completion(completion))
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def health(self) -> str:
        return "ok"


class RedisCache:
    """Redis-backed cache; failures raise CacheUnavailable and open a short circuit breaker."""

    kind = "redis"

    def __init__(self, client: Any, ttl_seconds: int, breaker: CircuitBreaker) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self.breaker = breaker

    async def get(self, key: str) -> Completion | None:
        raw = await self.breaker.call(self._redis.get(key))
        return None if raw is None else load_completion(raw)

    async def set(self, key: str, completion: Completion) -> None:
        await self.breaker.call(self._redis.set(key, dump_completion(completion), ex=self._ttl))

    def health(self) -> str:
        return self.breaker.health()


class CircuitBreaker:
    """Skips a failing dependency for a growing pause, so a dead Redis costs no timeouts.

    After a failure the dependency is not called for `pause` seconds (doubling up to
    `max_pause`); the first call after the pause probes it, and a success closes the breaker.
    """

    def __init__(self, name: str, base_pause: float = 0.5, max_pause: float = 5.0) -> None:
        self.name = name
        self._base = base_pause
        self._max = max_pause
        self._pause = 0.0
        self._open_until = 0.0
        self.last_error: str | None = None

    async def call(self, awaitable: Any) -> Any:
        if self._open_until and time.monotonic() < self._open_until:
            awaitable.close()
            raise CacheUnavailable(f"{self.name} skipped after a recent failure")
        try:
            result = await awaitable
        except Exception as exc:  # any client error means the store is not usable now
            self._pause = min(self._max, self._pause * 2 or self._base)
            self._open_until = time.monotonic() + self._pause
            self.last_error = type(exc).__name__
            log.warning("%s failed (%s); bypassing it for %.1fs", self.name, self.last_error, self._pause)
            raise CacheUnavailable(f"{self.name} failed: {type(exc).__name__}") from exc
        if self._open_until:
            log.info("%s is back", self.name)
        self._pause = 0.0
        self._open_until = 0.0
        self.last_error = None
        return result

    def health(self) -> str:
        return "degraded" if self._open_until else "ok"
