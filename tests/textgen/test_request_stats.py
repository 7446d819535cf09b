"""The queue time of a request, carried from vLLM's request stats to the lab's reply.

The real engine's figure is checked end to end in tests/api/test_runs.py; here a fake engine
client (it cannot be told to queue a request for a given time) checks which reply gets which
output, and that closing a stream early closes the engine's own generator at once (vLLM aborts
the request only then).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from vllm.v1.metrics.stats import RequestStateStats

from textgen.engines import EngineReply, request_stats


class FakeEngineClient:
    """Yields one unfinished and one finished output per prompt; `waits` is each prompt's
    queue time in seconds. Records which generators were closed."""

    def __init__(self) -> None:
        self.closed: list[str] = []

    async def generate(self, prompt: str, request_id: str, waits: float) -> AsyncIterator[Any]:
        stats = RequestStateStats(queued_ts=100.0, scheduled_ts=100.0 + waits)
        try:
            yield SimpleNamespace(finished=False, metrics=stats)
            yield SimpleNamespace(finished=True, metrics=stats)
        finally:
            self.closed.append(request_id)


async def read(client: FakeEngineClient, *waits: float) -> EngineReply:
    """What a generation task does: name its reply, then read each prompt's outputs."""
    reply = EngineReply()
    request_stats.answering(reply)
    for i, wait in enumerate(waits):
        async for _ in client.generate("p", f"r{i}", wait):
            pass
    return reply


async def test_each_generation_task_gets_its_own_queue_time() -> None:
    client = FakeEngineClient()
    request_stats.observe(client)
    one, two = await asyncio.gather(asyncio.create_task(read(client, 0.25)),
                                    asyncio.create_task(read(client, 1.5)))
    assert (one.queue, two.queue) == (0.25, 1.5)


async def test_a_request_of_several_prompts_waited_as_long_as_its_longest() -> None:
    client = FakeEngineClient()
    request_stats.observe(client)
    reply = await asyncio.create_task(read(client, 0.5, 2.0, 1.0))
    assert reply.queue == 2.0


async def test_closing_a_stream_early_closes_the_engines_generator_at_once() -> None:
    client = FakeEngineClient()
    request_stats.observe(client)

    async def first_output_only() -> EngineReply:
        reply = EngineReply()
        request_stats.answering(reply)
        outputs = client.generate("p", "cut", 0.1)
        await outputs.__anext__()
        await outputs.aclose()
        return reply

    reply = await asyncio.create_task(first_output_only())
    assert client.closed == ["cut"] and reply.queue is None  # it never finished


async def test_outputs_outside_a_generation_task_are_passed_through() -> None:
    client = FakeEngineClient()
    request_stats.observe(client)
    outputs = [o async for o in client.generate("p", "lone", 0.1)]
    assert [o.finished for o in outputs] == [False, True]
