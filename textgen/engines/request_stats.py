"""vLLM's own per-request stats, carried to the lab's reply of the request that asked.

vLLM's serving layer returns the OpenAI answer only. How long the engine kept a request
waiting before it first scheduled it rides on the `RequestOutput`s that the serving layer reads
from its engine client (`RequestOutput.metrics`, vLLM's `RequestStateStats`: engine-core
timestamps, as vLLM's own `vllm:request_queue_time_seconds` histogram reads them).

The serving layer calls `engine_client.generate` in the task that awaits or iterates it, which
is the lab generation's own task (textgen.flight): a context variable set there when the
generation starts names the reply the outputs of that task belong to. Tasks the serving layer
starts for several prompts copy that context, so they name the same reply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Any

from .base import EngineReply

_reply: ContextVar[EngineReply | None] = ContextVar("textgen_engine_reply", default=None)


def answering(reply: EngineReply) -> None:
    """The engine outputs this task reads from now on belong to `reply`."""
    _reply.set(reply)


def queue_seconds(stats: Any) -> float | None:
    """Seconds from a request's arrival in the engine core's queue to its first scheduling
    (vLLM's own formula); None when the engine recorded no stats or never scheduled it."""
    if stats is None or not stats.queued_ts or not stats.scheduled_ts:
        return None
    return max(0.0, float(stats.scheduled_ts - stats.queued_ts))


def observe(llm: Any) -> None:
    """Wrap `llm.generate` (an `AsyncLLM`'s, on this instance only) so that each finished
    output's queue time reaches the reply its task names. A request of several prompts
    waited as long as its longest-waiting prompt."""
    generate: Callable[..., AsyncIterator[Any]] = llm.generate

    async def observed(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        reply = _reply.get()
        outputs = generate(*args, **kwargs)
        try:
            async for output in outputs:
                if reply is not None and output.finished:
                    waited = queue_seconds(getattr(output, "metrics", None))
                    if waited is not None:
                        reply.queue = max(reply.queue or 0.0, waited)
                yield output
        finally:
            # Closed early (a client left, Stop): vLLM aborts the request when its own
            # generator is closed, so close it now rather than when it is collected.
            await outputs.aclose()  # type: ignore[attr-defined]

    llm.generate = observed
