"""The one small interface every engine offers: generate a stream of deltas, load, close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from ..types import Delta, GenerationRequest, Usage

EngineEvent = Delta | Usage


class Engine(Protocol):
    """An engine serves one or more model ids; in-process vLLM or a remote vLLM server."""

    kind: str  # "vllm" (in-process) or "remote"

    def generate(self, request: GenerationRequest, request_id: str) -> AsyncIterator[EngineEvent]:
        """Deltas of every choice as they come (global choice index), then one Usage.

        Errors in the request (context too long, no chat template) are raised before the
        first event; closing the iterator early aborts the generation in the engine.
        """
        ...

    def in_flight(self) -> int:
        """Requests this engine is working on now."""
        ...

    async def close(self) -> None: ...
