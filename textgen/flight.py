"""Single flight: identical requests in flight at the same time share one generation.

The first request for a cache key starts a Flight: the engine's work runs in a task of its
own, and every request that reads it - the first, and identical ones that come while it runs -
holds a Reader. A streamed reader gets every chunk from the first one on, live; a plain reader
gets the finished answer (merged from the chunks when the flight streams, `textgen.answer`).
The generation goes on while at least one reader remains: a client that leaves takes only
itself away, and the last one to leave aborts the engine's work (nothing is cached then).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import events
from .answer import (
    FINISHED,
    Answer,
    finish_reasons,
    is_usage_chunk,
    merge_chunks,
    split_response,
    usage_of,
)
from .engines import EngineReply
from .request import EVENT_ROUTES, POOLING_ROUTES, Route

Rename = Callable[[dict[str, Any]], dict[str, Any]]


class EveryReaderLeft(Exception):
    """The flight was stopped: nobody was reading it any more."""


class Flight:
    """One engine generation and the requests reading it; it starts at once."""

    def __init__(self, endpoint: Route, run: Callable[[], Awaitable[EngineReply]],
                 on_end: Callable[[Flight], Awaitable[None]]) -> None:
        self.endpoint = endpoint
        self.chunks: list[dict[str, Any]] = []
        self.response: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.accepted = False  # the engine took the request (it passed validation)
        self.done = False
        self.started = time.monotonic()
        self.first_token: float | None = None
        self.finished: float | None = None
        self.readers = 0
        self._reply: EngineReply | None = None
        self._changed = asyncio.Event()
        self._on_end = on_end
        self._task = asyncio.create_task(self._pump(run), name="generation")

    async def _pump(self, run: Callable[[], Awaitable[EngineReply]]) -> None:
        source: Any = None
        try:
            reply = self._reply = await run()
            self.accepted = True
            self._notify()
            if reply.chunks is None:
                self.response = reply.response
                self.first_token = time.monotonic()
            else:
                source = reply.chunks
                async for chunk in source:
                    if self.first_token is None:
                        self.first_token = time.monotonic()
                    self.chunks.append(chunk)
                    self._notify()
        except asyncio.CancelledError:
            self.error = EveryReaderLeft("every client of this generation left")
        except BaseException as exc:  # the engine's own error: every reader gets it
            self.error = exc
        finally:
            if source is not None:
                with contextlib.suppress(Exception):
                    await source.aclose()  # ended early: the engine aborts the request
            self.finished = time.monotonic()
            self.done = True
            self._notify()
            await self._on_end(self)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changed(self) -> None:
        await self._changed.wait()

    def join(self, rename: Rename | None = None) -> Reader:
        """A new reader of this flight (the generation goes on while one remains)."""
        self.readers += 1
        return Reader(self, rename)

    def leave(self) -> None:
        self.readers -= 1
        if self.readers == 0 and not self.done:
            self._task.cancel()

    async def accepted_or_failed(self) -> None:
        """Wait until the engine took the request; raise its refusal (validation) if not."""
        while not (self.accepted or self.done):
            await self.changed()
        if not self.accepted and self.error is not None:
            raise self.error

    @property
    def queue(self) -> float | None:
        """Seconds the engine kept this generation waiting before it began, when it says."""
        return self._reply.queue if self._reply is not None else None

    @property
    def complete(self) -> bool:
        """Finished on its own: every choice with a finish reason that is not an abort."""
        if not self.done or self.error is not None:
            return False
        if self.endpoint in POOLING_ROUTES:
            return self.response is not None  # one pass, nothing to cut short
        if self.endpoint in EVENT_ROUTES:
            return events.finished(self.endpoint, response=self.response, events=self.chunks)
        choices = (self.response or {}).get("choices") if self.response is not None else [
            c for chunk in self.chunks for c in chunk.get("choices") or ()]
        indexes = {c.get("index", 0) for c in choices or ()}
        reasons = finish_reasons(list(choices or ()))
        return bool(indexes) and all(reasons.get(i) in FINISHED for i in indexes)

    def answer(self) -> Answer | None:
        if not self.complete:
            return None
        if self.response is not None:
            return Answer(self.endpoint, "response", self.response)
        return Answer(self.endpoint, "chunks", self.chunks)

    @property
    def usage(self) -> dict[str, Any] | None:
        if self.response is not None:
            return usage_of(self.response)
        if self.endpoint in EVENT_ROUTES:
            usage = None
            for event in self.chunks:
                usage = events.take_usage(self.endpoint, usage, event)
            return usage
        last = self.chunks[-1] if self.chunks else None
        return last.get("usage") if last is not None and is_usage_chunk(last) else None


class Reader:
    """One request's hold on a flight: its chunks as they come, or the finished answer."""

    def __init__(self, flight: Flight, rename: Rename | None) -> None:
        self._flight = flight
        self._rename = rename or (lambda chunk: chunk)
        self._next = 0
        self._left = False
        self._split: list[dict[str, Any]] | None = None

    def __aiter__(self) -> Reader:
        return self

    async def __anext__(self) -> dict[str, Any]:
        flight = self._flight
        while True:
            if flight.response is not None:  # a plain flight, read as a stream: its split
                if self._split is None:
                    self._split = split_response(flight.endpoint, flight.response)
                chunks = self._split
            else:
                chunks = flight.chunks
            if self._next < len(chunks):
                self._next += 1
                return self._rename(chunks[self._next - 1])
            if flight.done:
                if flight.error is not None:
                    raise flight.error
                raise StopAsyncIteration
            await flight.changed()

    async def result(self) -> dict[str, Any]:
        """The whole answer as one response object; the reader leaves once it has it."""
        flight = self._flight
        try:
            while not flight.done:
                await flight.changed()
            if flight.error is not None:
                raise flight.error
            if flight.response is not None:
                return self._rename(flight.response)
            return self._rename(merge_chunks(flight.endpoint, flight.chunks))
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._left:
            self._left = True
            self._flight.leave()
