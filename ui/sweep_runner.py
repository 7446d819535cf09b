"""The benchmark tab's runner: a concurrency sweep through `TextGen`, timed as `vllm bench
serve` times it.

Each level sends its requests through the lab's own pipeline (admission, limits, the engine,
metrics) with the response cache bypassed both ways, `concurrency` at a time, as streamed
completions of random-token prompts of the chosen length that run to exactly the chosen output
length (`ignore_eos`) — the shape of `vllm bench serve --dataset-name random`.

The sweep counts against the model's rate limit like any other caller (the limiter protects an
engine that API clients share); the tab refuses a sweep larger than the limit up front. One
sweep runs at a time in the lab: two would measure each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from textgen import OpenAIRequest, RateLimited, TextGen, TextGenError
from textgen.runs import provenance

from .alerts import user_message
from .sweep import Measured, level_row

# Text whose tokens make up the random prompts: ordinary prose, so they are ordinary tokens.
_SOURCE_TEXT = (
    "The researcher rented one machine with a single accelerator and wanted to know how many "
    "tokens per second it could serve when several people asked questions at once. She wrote "
    "down the model, the precision, the prompt and answer lengths, and a list of concurrencies, "
    "then watched the time to the first token grow while the throughput climbed and levelled "
    "off. Numbers, tables, plots and careful notes about batching, memory, caches, schedulers, "
    "queues, kernels and compilers filled the afternoon; the evening went to the weather, a "
    "river, three colours of paint, seven bicycles, a library, and questions about history."
)


@dataclass
class Progress:
    """Where a sweep stands: the finished levels' rows, and the level running now."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    level: int | None = None
    done: int = 0
    total: int = 0
    stopped_by: str | None = None  # why the sweep ended early


class SweepGuard:
    """One sweep at a time in the whole lab, whichever page starts it."""

    def __init__(self) -> None:
        self.running: str | None = None  # what the running sweep is, for the refusal

    @contextlib.contextmanager
    def hold(self, description: str) -> Any:
        if self.running is not None:
            raise RuntimeError(self.running)
        self.running = description
        try:
            yield
        finally:
            self.running = None


def about(textgen: TextGen, model: str) -> dict[str, str]:
    """What a sweep runs on: model, engine, dtype, device, vLLM version."""
    entry = textgen.models.entry(model)
    engine = entry.engine
    facts = {"model": model}
    if engine is not None and engine.kind == "remote":
        facts["engine"] = f"remote vLLM ({getattr(engine, 'url', '?')})"
        facts["dtype"] = "as the server runs it"
        facts["device"] = "the remote server's"
    else:
        facts["engine"] = f"in-process {provenance.vllm_version() or 'vLLM'}"
        facts["dtype"] = str(getattr(engine, "dtype", None) or textgen.settings.DTYPE)
        facts["device"] = device(textgen)
    return facts


def device(textgen: TextGen) -> str:
    """The GPUs' names, or the CPU's with its core count (as kept runs name it)."""
    probe = textgen.telemetry.gpu
    return provenance.device([g.name for g in probe.read()] if probe.available else [])


async def prompts(textgen: TextGen, model: str, length: int, count: int,
                  seed: int = 0) -> list[list[int]]:
    """`count` prompts of exactly `length` token ids, drawn at random from ordinary tokens.

    Token ids (which /v1/completions takes as a prompt) keep the length exact; drawing them at
    random keeps prompts apart, so the prefix cache does not shorten the work.
    """
    tokenized = await textgen.tokenize("/tokenize", {"model": model, "prompt": _SOURCE_TEXT,
                                                     "add_special_tokens": False})
    pool = sorted(set(tokenized["tokens"]))
    rng = random.Random(seed)
    return [[rng.choice(pool) for _ in range(length)] for _ in range(count)]


def request(model: str, prompt: list[int], output_len: int, sweep_id: str) -> OpenAIRequest:
    """One sweep request: the body `vllm bench serve` sends, never read from or written to the
    cache, kept in the run store as one of the sweep's runs."""
    body = {"model": model, "prompt": prompt, "repetition_penalty": 1.0, "max_tokens": output_len,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    return OpenAIRequest("completions", body, read_cache=False, write_cache=False,
                         record="sweep", experiment=sweep_id)


async def measure(textgen: TextGen, request_: OpenAIRequest) -> Measured:
    """Send one request and time its chunks as vLLM's benchmark client does."""
    started = last = time.perf_counter()
    ttft: float | None = None
    gaps: list[float] = []
    try:
        generation = await textgen.open(request_)
        chunks = generation.chunks()
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if not chunk.get("choices"):
                    continue  # the usage chunk
                now = time.perf_counter()
                if ttft is None:
                    ttft = now - started
                else:
                    gaps.append(now - last)
                last = now
    except RateLimited:
        raise  # ends the sweep: the rest would be refused too
    except TextGenError as exc:
        return Measured(started, time.perf_counter(), error=user_message(exc))
    return Measured(started, last, ttft, tuple(gaps), generation.completion_tokens)


async def run_level(textgen: TextGen, requests: list[OpenAIRequest], concurrency: int,
                    progress: Progress) -> list[Measured]:
    """All of a level's requests, `concurrency` in flight at a time."""
    queue = list(reversed(requests))
    results: list[Measured] = []

    async def worker() -> None:
        while queue:
            results.append(await measure(textgen, queue.pop()))
            progress.done += 1

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, len(requests)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return results


async def sweep(textgen: TextGen, model: str, levels: list[tuple[int, int]], input_len: int,
                output_len: int, *, seed: int = 0, tick: float = 0.5) -> AsyncIterator[Progress]:
    """Run the levels in order, yielding the progress every `tick` seconds and after each
    level; a rate-limit refusal ends the sweep with the levels measured so far. Closing the
    generator (Stop) cancels the level that runs, and its requests are aborted in the engine."""
    progress = Progress(total=sum(n for _, n in levels))
    sweep_id = f"sweep-{uuid.uuid4().hex[:12]}"
    all_prompts = await prompts(textgen, model, input_len, progress.total, seed)
    for concurrency, count in levels:
        progress.level = concurrency
        batch = [request(model, all_prompts.pop(), output_len, sweep_id) for _ in range(count)]
        task = asyncio.create_task(run_level(textgen, batch, concurrency, progress))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=tick)
                if not task.done():
                    yield progress
            results = task.result()
        except RateLimited as exc:
            progress.stopped_by = (f"the rate limit refused a request at concurrency "
                                   f"{concurrency} ({user_message(exc)})")
            break
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        progress.rows.append(level_row(concurrency, results))
        yield progress
    progress.level = None
    yield progress
