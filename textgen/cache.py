"""Response cache: Redis when configured, an in-process LRU otherwise.

The key is a hash of the whole request body, canonicalised (keys sorted), minus the few fields
that cannot change the answer (`IGNORED_FIELDS`), plus the endpoint and the identity of the
weights that serve the model. A field the lab has never heard of is part of the key, so no new
OpenAI or vLLM field can make two different requests share an entry; `stream` is not, so a
streamed and a plain request share one entry (`textgen.answer` turns one form into the other).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson

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
    try:
        canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        # Numbers past 64 bits: orjson refuses them; the slower json module does not.
        import json

        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return f"{KEY_PREFIX}{hashlib.sha256(canonical).hexdigest()}"


def dump_answer(answer: Answer) -> bytes:
    return orjson.dumps(answer.to_json())


def load_answer(raw: bytes) -> Answer:
    return Answer.from_json(orjson.loads(raw))


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

    async def set(self, key: str, answer: Answer) -> None:
        if self._max <= 0:
            return
        self._entries[key] = (time.monotonic() + self._ttl, dump_answer(answer))
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

    async def get(self, key: str) -> Answer | None:
        raw = await self.breaker.call(self._redis.get(key))
        return None if raw is None else load_answer(raw)

    async def set(self, key: str, answer: Answer) -> None:
        await self.breaker.call(self._redis.set(key, dump_answer(answer), ex=self._ttl))

    def health(self) -> str:
        return self.breaker.health()


class CircuitBreaker:
    """Skips a failing dependency for a growing pause, so a dead Redis costs no timeouts.

    Closed, calls go through. After a failure it opens: calls are skipped (CacheUnavailable at
    once) for `pause` seconds, doubling up to `max_pause`. Then exactly one call goes through
    as a probe while the others are still skipped: its success closes the breaker, its failure
    opens it again for longer. An error *reply* (`reply_errors`: the server answered, e.g.
    Redis' WRONGTYPE or OOM) fails that call only: the server is up, nothing opens.
    """

    def __init__(self, name: str, base_pause: float = 0.5, max_pause: float = 5.0,
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
            self._pause = min(self._max, self._pause * 2 or self._base)
            self._open_until = time.monotonic() + self._pause
            self.last_error = type(exc).__name__
            log.warning("%s failed (%s); bypassing it for %.1fs", self.name, self.last_error, self._pause)
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
