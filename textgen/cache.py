"""Response cache: Redis when configured, an in-process LRU otherwise.

The key is a hash of the whole request body, canonicalised (keys sorted), minus the few fields
that cannot change the answer (`IGNORED_FIELDS`), plus the endpoint and the identity of the
weights that serve the model. A field the lab has never heard of is part of the key, so no new
OpenAI or vLLM field can make two different requests share an entry; `stream` is not, so a
streamed and a plain request share one entry (`textgen.answer` turns one form into the other),
except on the routes that stream typed events (Responses, Messages), whose two forms are kept
apart.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

from . import jsoncodec
from .answer import Answer
from .request import OpenAIRequest

log = logging.getLogger(__name__)

KEY_PREFIX = "vllm:"
_KEY_VERSION = 2

# Body fields that cannot change the answer. `stream_options` only says whether the usage
# chunk is sent (answers are stored with it and it is dropped on replay when not asked for);
# `user` and `priority` identify or order requests; `request_id` names one request.
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "priority", "request_id"})


def cache_key(request: OpenAIRequest, weights: str = "") -> str:
    """Redis key of a request: `vllm:` + sha256 of its endpoint, weights and canonical body."""
    body = {k: v for k, v in request.body.items() if k not in IGNORED_FIELDS}
    payload = {"v": _KEY_VERSION, "endpoint": request.endpoint, "weights": weights, "body": body}
    if request.evented:  # events and a response object are not turned into each other
        payload["stream"] = request.stream
    canonical = jsoncodec.dumps(payload, sort_keys=True)
    return f"{KEY_PREFIX}{hashlib.sha256(canonical).hexdigest()}"


def dump_answer(answer: Answer) -> bytes:
    return jsoncodec.dumps(answer.to_json())


def load_answer(raw: bytes) -> Answer:
    return Answer.from_json(jsoncodec.loads(raw))


class CacheUnavailable(Exception):
    """The cache store failed; the caller bypasses the cache for this request."""


class ResponseCache(Protocol):
    kind: str

    async def get(self, key: str) -> Answer | None: ...

    async def set(self, key: str, answer: Answer) -> None: ...

    def health(self) -> str: ...


class MemoryCache:
    """Bounded LRU with a TTL, for a lab without Redis."""

    kind = "memory"

    def __init__(self, max_entries: int, ttl_seconds: float) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_seconds

    async def get(self, key: str) -> Answer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, raw = entry
        if expires < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return load_answer(raw)

    async def set(self, key: str, answer: Answer, ttl: float | None = None) -> None:
        self.put(key, dump_answer(answer), self._ttl if ttl is None else ttl)

    def put(self, key: str, raw: bytes, ttl: float) -> None:
        if self._max <= 0 or ttl <= 0:
            return
        self._entries[key] = (time.monotonic() + ttl, raw)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def health(self) -> str:
        return "ok"


class RedisCache:
    """Redis-backed cache; failures raise CacheUnavailable and open a short circuit breaker."""

    kind = "redis"

    def __init__(self, client: Any, ttl_seconds: int, breaker: CircuitBreaker) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self.breaker = breaker

    async def get(self, key: str) -> Answer | None:
        raw = await self.breaker.call(self._redis.get(key))
        return None if raw is None else load_answer(raw)

    async def get_raw(self, key: str) -> tuple[bytes | None, float]:
        """An entry's bytes and the seconds it has left, in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(key)
        pipe.pttl(key)
        raw, pttl = await self.breaker.call(pipe.execute())
        return raw, max(pttl, 0) / 1000 if raw is not None else 0.0

    async def set(self, key: str, answer: Answer) -> None:
        await self.breaker.call(self._redis.set(key, dump_answer(answer), ex=self._ttl))

    def health(self) -> str:
        return self.breaker.health()


class TieredCache:
    """Redis behind a bounded in-process tier (CACHE_MAX_ENTRIES entries).

    A hit in the local tier costs no round trip, and the hot entries it holds keep being
    served while Redis is down. Answers are written to both. An entry read from Redis is kept
    locally for the time Redis still gives it, so it never outlives its Redis TTL. What two
    replicas may see differently: an entry that Redis dropped before its TTL (its
    `allkeys-lru` eviction, a flush) lives on in a replica's local tier until that TTL ends,
    at most CACHE_TTL_SECONDS; entries are never changed, only added, so nothing stale is
    served - only an entry one replica still has and another no longer does.
    """

    kind = "redis"

    def __init__(self, local: MemoryCache, remote: RedisCache) -> None:
        self.local = local
        self.remote = remote
        self.breaker = remote.breaker

    async def get(self, key: str) -> Answer | None:
        answer = await self.local.get(key)
        if answer is not None:
            return answer
        raw, ttl = await self.remote.get_raw(key)  # CacheUnavailable while Redis is down
        if raw is None:
            return None
        self.local.put(key, raw, ttl)
        return load_answer(raw)

    async def set(self, key: str, answer: Answer) -> None:
        await self.local.set(key, answer)
        await self.remote.set(key, answer)  # a Redis outage is raised; the local copy stays

    def health(self) -> str:
        return self.remote.health()


class CircuitBreaker:
    """Skips a failing dependency for a growing pause, so a dead Redis costs no timeouts.

    Closed, calls go through. After a failure it opens: calls are skipped (CacheUnavailable at
    once) for `pause` seconds, doubling up to `max_pause` (calls failing together count once).
    Then exactly one call goes through
    as a probe while the others are still skipped: its success closes the breaker, its failure
    opens it again for longer. An error *reply* (`reply_errors`: the server answered, e.g.
    Redis' WRONGTYPE or OOM) fails that call only: the server is up, nothing opens.
    """

    def __init__(self, name: str, base_pause: float = 0.5, max_pause: float = 2.0,
                 reply_errors: tuple[type[BaseException], ...] = ()) -> None:
        self.name = name
        self._base = base_pause
        self._max = max_pause
        self._reply_errors = reply_errors
        self._pause = 0.0
        self._open_until = 0.0
        self._probing = False
        self.last_error: str | None = None

    async def call(self, awaitable: Any) -> Any:
        if self._open_until:
            if self._probing or time.monotonic() < self._open_until:
                awaitable.close()
                raise CacheUnavailable(f"{self.name} skipped after a recent failure")
            self._probing = True  # this call is the one probe
        try:
            result = await awaitable
        except self._reply_errors as exc:
            self._close()
            raise CacheUnavailable(f"{self.name} refused the call: {type(exc).__name__}") from exc
        except Exception as exc:  # no answer: the store is not usable now
            if time.monotonic() >= self._open_until:  # not already opened by a call beside it
                self._pause = min(self._max, self._pause * 2 or self._base)
                self._open_until = time.monotonic() + self._pause
                self.last_error = type(exc).__name__
                log.warning("%s failed (%s); bypassing it for %.1fs", self.name,
                            self.last_error, self._pause)
            raise CacheUnavailable(f"{self.name} failed: {type(exc).__name__}") from exc
        finally:
            self._probing = False
        self._close()
        return result

    def _close(self) -> None:
        if self._open_until:
            log.info("%s is back", self.name)
        self._pause = 0.0
        self._open_until = 0.0
        self.last_error = None

    def health(self) -> str:
        return "degraded" if self._open_until else "ok"
