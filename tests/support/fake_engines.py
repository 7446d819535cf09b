"""A fake in-process engine, for what the real one cannot be made to do on demand.

FakeEngine answers at once, or holds a request (prompt "hold") until released or interrupted,
dies when told, and counts what it was asked. FakeStarter loads such engines, slowly when a
test holds the load, and refuses a model its check fails. The real engine's own behaviour of
each case is tested with vLLM in tests/api/test_engine_lifecycle.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from textgen import OpenAIRequest, TextGenError
from textgen.engines import EngineReply


def completion_chunk(model: str, text: str, finish: str | None = None) -> dict[str, Any]:
    return {"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}


class FakeEngine:
    kind = "vllm"

    def __init__(self, model_id: str, weights: str = "fake-weights") -> None:
        self.model_id = model_id
        self._weights = weights
        self.requests: list[dict[str, Any]] = []
        self.request_ids: list[str] = []
        self.release = asyncio.Event()  # set to let held requests finish
        self.holding = asyncio.Event()  # set while a request is held
        self.held = 0
        self.dead = False
        self.closed = 0
        self.aborted = 0  # streams closed before their end (the client, or every client, left)
        self._interruption: TextGenError | None = None
        self._interrupted = asyncio.Event()
        self.me = self  # a reference cycle, as vLLM's engine objects have: only the GC frees it

    def cache_identity(self, model: str) -> str:
        return self._weights

    async def generate(self, request: OpenAIRequest, request_id: str) -> EngineReply:
        self.requests.append(request.body)
        self.request_ids.append(request_id)
        hold = request.body.get("prompt") == "hold"
        if request.stream:
            return EngineReply(chunks=self._stream(hold))
        if hold:
            await self._hold()
        return EngineReply(response={
            **completion_chunk(self.model_id, "Hello world", "stop"), "object": "text_completion",
            "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}})

    async def _stream(self, hold: bool) -> AsyncIterator[dict[str, Any]]:
        ended = False
        try:
            yield completion_chunk(self.model_id, "Hello")
            if hold:
                await self._hold()
            yield completion_chunk(self.model_id, " world", "stop")
            yield {"id": "cmpl-fake", "object": "text_completion", "created": 1,
                   "model": self.model_id, "choices": [],
                   "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}}
            ended = True
        finally:
            if not ended:
                self.aborted += 1

    async def _hold(self) -> None:
        self.held += 1
        self.holding.set()
        try:
            released = asyncio.ensure_future(self.release.wait())
            interrupted = asyncio.ensure_future(self._interrupted.wait())
            await asyncio.wait({released, interrupted}, return_when=asyncio.FIRST_COMPLETED)
            released.cancel()
            interrupted.cancel()
            if self._interruption is not None:
                raise self._interruption
        finally:
            self.held -= 1

    async def interrupt(self, error: TextGenError) -> None:
        self._interruption = error
        self._interrupted.set()

    async def tokenize(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"count": 0, "tokens": []}

    async def close(self) -> None:
        self.closed += 1


class FakeStarter:
    """Starts FakeEngines; `slow` holds every load until `let_load` is set; `broken` models fail
    the check a real engine's config would fail."""

    def __init__(self, *, slow: bool = False, broken: tuple[str, ...] = ()) -> None:
        self.engines: list[FakeEngine] = []
        self.let_load = asyncio.Event()
        if not slow:
            self.let_load.set()
        self.loading = asyncio.Event()  # set once a load is waiting on let_load
        self.broken = broken

    async def start(self, model_id: str, folder: Path) -> FakeEngine:
        self.loading.set()
        await self.let_load.wait()
        engine = FakeEngine(model_id, weights=f"{folder}")
        self.engines.append(engine)
        return engine

    async def check(self, model_id: str, folder: Path) -> None:
        if model_id in self.broken:
            raise ValueError(f"{folder} holds no model vLLM can load")
