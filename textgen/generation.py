"""One running generation: the events a caller streams, and what they add up to."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from .engines import EngineEvent
from .ratelimit import RateDecision
from .types import Choice, Completion, Delta, GenerationRequest, Usage

CacheStatus = Literal["HIT", "MISS", "BYPASS"]


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
    """Returned by `TextGen.open`: admission facts first, then `events()` to stream.

    Iterate `events()` to the end to get `completion`; closing it early (a client that went
    away, the UI's Stop) aborts the engine's work and nothing is cached.
    """

    def __init__(
        self,
        *,
        id: str,
        request: GenerationRequest,
        source: AsyncIterator[EngineEvent],
        first: EngineEvent | None,
        cache_status: CacheStatus,
        rate: RateDecision | None,
        timing: Timing,
        on_finish: Callable[[Generation, BaseException | None], Awaitable[None]],
        cached: Completion | None = None,
    ) -> None:
        self.id = id
        self.created = int(time.time())
        self.request = request
        self.model = request.model
        self.cache_status: CacheStatus = cache_status
        self.rate = rate
        self.timing = timing
        self.usage = Usage()
        self.completion: Completion | None = None
        self._source = source
        self._first = first
        self._on_finish = on_finish
        self._choices = [Choice(index=i) for i in range(request.choice_count)]
        self._pieces: list[tuple[int, str, int]] = []
        self._consumed = False
        self._cached = cached

    async def result(self) -> Completion:
        """Run to the end and return the whole completion; a cache hit returns it at once."""
        if self._cached is not None and not self._consumed:
            self._consumed = True
            self.completion, self.usage = self._cached, self._cached.usage
            self.timing.finished = time.monotonic()
            await self._on_finish(self, None)
            return self._cached
        events = self.events()
        async with contextlib.aclosing(events):
            async for _ in events:
                pass
        assert self.completion is not None
        return self.completion

    async def events(self) -> AsyncIterator[Delta]:
        """The deltas of every choice, in arrival order."""
        if self._consumed:
            raise RuntimeError("a generation can be streamed once")
        self._consumed = True
        error: BaseException | None = None
        try:
            async with contextlib.aclosing(self._source):
                if self._first is not None:
                    first, self._first = self._first, None
                    if (delta := self._take(first)) is not None:
                        yield delta
                async for event in self._source:
                    if (delta := self._take(event)) is not None:
                        yield delta
            self.timing.finished = time.monotonic()
            self.completion = Completion(self.model, self._choices, self.usage, self._pieces)
        except BaseException as exc:  # GeneratorExit included: the consumer stopped early
            error = exc
            raise
        finally:
            await self._on_finish(self, error)

    def _take(self, event: EngineEvent) -> Delta | None:
        if isinstance(event, Usage):
            self.usage = event
            return None
        choice = self._choices[event.index]
        if event.text and self.timing.first_token is None:
            self.timing.first_token = time.monotonic()
        choice.text += event.text
        if event.logprobs is not None:
            choice.logprobs = (choice.logprobs or []) + event.logprobs
        if event.finish_reason is not None:
            choice.finish_reason = event.finish_reason
        self._pieces.append(
            (event.index, event.text, len(event.logprobs) if event.logprobs is not None else -1)
        )
        return event

    @property
    def complete(self) -> bool:
        """Every choice finished on its own (stop or length), nothing aborted."""
        return self.completion is not None and all(
            c.finish_reason in ("stop", "length") for c in self._choices
        )


async def replay(completion: Completion) -> AsyncIterator[EngineEvent]:
    """A cached completion as the same stream of deltas it was first generated as."""
    by_index = {c.index: c for c in completion.choices}
    last_piece = {index: pos for pos, (index, _, _) in enumerate(completion.pieces)}
    offsets = dict.fromkeys(by_index, 0)
    for pos, (index, text, n_logprobs) in enumerate(completion.pieces):
        choice = by_index[index]
        logprobs = None
        if n_logprobs >= 0 and choice.logprobs is not None:
            start = offsets[index]
            logprobs = choice.logprobs[start : start + n_logprobs]
            offsets[index] = start + n_logprobs
        finish = choice.finish_reason if last_piece[index] == pos else None
        yield Delta(index, text, finish, logprobs)
    yield Usage(completion.usage.prompt_tokens, completion.usage.completion_tokens)
