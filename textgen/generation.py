"""One request's answer as the caller takes it: a finished response, or chunks to stream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from . import events
from .answer import is_usage_chunk, merge_chunks, token_counts, usage_of
from .ratelimit import RateDecision
from .request import OpenAIRequest

# SHARED: read from an identical request's generation in flight (textgen.flight).
CacheStatus = Literal["HIT", "MISS", "BYPASS", "SHARED"]


@dataclass(slots=True)
class Timing:
    started: float
    first_token: float | None = None
    finished: float | None = None

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started

    @property
    def total(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


class Generation:
    """Returned by `TextGen.open`: the admission facts, then the answer.

    A plain request arrives finished (`response`). A streamed one is read once through
    `chunks()`; closing it early (a client that went away, the UI's Stop) stops this request's
    reading, and the engine's work with it when no identical request reads it too
    (textgen.flight): nothing is cached then. `aclose()` ends it whatever state it is in.
    """

    def __init__(
        self,
        *,
        request: OpenAIRequest,
        cache_status: CacheStatus,
        rate: RateDecision | None,
        timing: Timing,
        on_finish: Callable[[Generation, BaseException | None], Awaitable[None]],
        response: dict[str, Any] | None = None,
        source: AsyncIterator[dict[str, Any]] | None = None,
    ) -> None:
        self.request = request
        self.model = request.model
        self.cache_status: CacheStatus = cache_status
        self.rate = rate
        self.timing = timing
        self.response = response
        self.usage: dict[str, Any] | None = usage_of(response) if response else None
        self.id: str | None = response.get("id") if response else None
        self._source = source
        self._on_finish = on_finish
        self._state: Literal["open", "streaming", "ended"] = "open" if source else "ended"
        # A stream that is kept in the run store keeps its chunks, to store the answer whole.
        self._kept: list[dict[str, Any]] | None = [] if source and request.record else None

    @property
    def stream(self) -> bool:
        return self._source is not None

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        """The chunks as the client gets them (the usage chunk only when it asked for it)."""
        if self._source is None or self._state != "open":
            raise RuntimeError("a generation can be streamed once, and only if it streams")
        self._state = "streaming"
        # Typed events (Responses, Messages) go out as they come: their usage is their own.
        include_usage = self.request.include_usage or self.request.evented
        error: BaseException | None = None
        # Engines are always asked for the usage chunk, and vLLM then puts the system
        # fingerprint on it instead of on each choice's last chunk. For a client that did not
        # ask for usage, a choice's last chunk waits for the next chunk (one engine step at
        # most) to be stamped as vLLM would have stamped it.
        held: list[dict[str, Any]] = []
        try:
            async for chunk in self._source:
                self._take(chunk)
                if include_usage:
                    yield chunk
                    continue
                fingerprint = chunk.get("system_fingerprint") if is_usage_chunk(chunk) else None
                for last in held:
                    yield {**last, "system_fingerprint": fingerprint} if fingerprint else last
                held = []
                if is_usage_chunk(chunk):
                    continue
                if any(c.get("finish_reason") for c in chunk.get("choices") or ()):
                    held.append(chunk)
                else:
                    yield chunk
            for last in held:
                yield last
            self.timing.finished = time.monotonic()
        except BaseException as exc:  # GeneratorExit included: the consumer stopped early
            error = exc
            raise
        finally:
            await self._end(error)

    async def aclose(self) -> None:
        """End the generation now: a stream nobody read to its end is aborted, not cached."""
        if self._state == "open" and self._source is not None:
            await self._end(ConnectionAbortedError("the stream was closed before it was read"))

    async def _end(self, error: BaseException | None) -> None:
        if self._state == "ended":
            return
        self._state = "ended"
        try:
            if self._source is not None:
                await self._source.aclose()  # type: ignore[attr-defined]
        finally:
            await self._on_finish(self, error)

    def _take(self, chunk: dict[str, Any]) -> None:
        if self._kept is not None:
            self._kept.append(chunk)
        if self.id is None:
            self.id = chunk.get("id")
        if self.timing.first_token is None:
            self.timing.first_token = time.monotonic()
        if self.request.evented:
            self.usage = events.take_usage(self.request.endpoint, self.usage, chunk)
        elif is_usage_chunk(chunk):
            self.usage = usage_of(chunk)

    def answer(self) -> dict[str, Any] | None:
        """The answer as one response object, as far as it came (a kept stream's chunks merged)."""
        if self.response is not None:
            return self.response
        if self._kept:
            return merge_chunks(self.request.endpoint, self._kept)
        return None

    @property
    def completion_tokens(self) -> int:
        return token_counts(self.usage)[1]

    @property
    def prompt_tokens(self) -> int:
        return token_counts(self.usage)[0]


async def replay(chunks: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """A cached answer's chunks as a stream."""
    for chunk in chunks:
        yield chunk
