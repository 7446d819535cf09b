"""The one small interface every engine offers: answer an OpenAI request, tokenize, close."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import TextGenError
from ..request import OpenAIRequest


@dataclass(slots=True)
class EngineReply:
    """An engine's answer: the whole response of a plain request, or a stream's chunks.

    `chunks` yields parsed chunk objects, the usage chunk last (engines always ask for it);
    closing it early aborts the generation in the engine.
    """

    response: dict[str, Any] | None = None
    chunks: AsyncIterator[dict[str, Any]] | None = None
    # Seconds the engine held the request before it first scheduled it, once the engine knows
    # (in-process vLLM: when its generation ends; a remote server does not tell).
    queue: float | None = None


class Engine(Protocol):
    """An engine serves one or more model ids: in-process vLLM or a remote vLLM server."""

    kind: str  # "vllm" (in-process) or "remote"

    async def generate(self, request: OpenAIRequest, request_id: str) -> EngineReply:
        """Answer a request in the form it asks for (`request.stream`).

        Errors in the request (validation, context too long, no chat template) are raised as
        typed errors before anything is produced; a failure mid-stream is raised from `chunks`.
        """
        ...

    async def tokenize(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """`/tokenize` or `/detokenize` for one of this engine's models."""
        ...

    async def interrupt(self, error: TextGenError) -> None:
        """End every request in flight with `error` (an unload, the lab stopping)."""
        ...

    def cache_identity(self, model: str) -> str:
        """What identifies the weights (and settings) behind a model, for the cache key."""
        ...

    async def close(self) -> None: ...
