"""Does the in-process engine batch concurrent requests? Tokens/s at concurrency 1..16.

Runs the default model through TextGen (cache off, ignore_eos, fixed length) at several
concurrencies in one process and prints wall time, aggregate tokens/s and time to first token.

    .venv/bin/python benchmarks/engine_batching.py [--tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textgen import DEFAULT_MODEL, OpenAIRequest, Settings, TextGen  # noqa: E402


async def one(textgen: TextGen, i: int, tokens: int) -> tuple[float, int]:
    request = OpenAIRequest(
        "completions",
        {"model": DEFAULT_MODEL, "prompt": f"Story number {i}: once upon a time",
         "max_tokens": tokens, "temperature": 0.8, "ignore_eos": True, "stream": True},
        read_cache=False,
        write_cache=False,
    )
    generation = await textgen.open(request)
    async for _ in generation.chunks():
        pass
    return generation.timing.time_to_first_token or 0.0, generation.completion_tokens


async def main(tokens: int, levels: list[int]) -> None:
    textgen = TextGen(Settings(VLLM_ENDPOINT="", METRICS_PORT=0, RATE_LIMITS={DEFAULT_MODEL: 0}))
    await textgen.start()
    try:
        await one(textgen, -1, 8)  # warm-up
        print(f"{DEFAULT_MODEL}, {tokens} tokens per request, in-process vLLM")
        for n in levels:
            started = time.perf_counter()
            results = await asyncio.gather(*(one(textgen, i, tokens) for i in range(n)))
            wall = time.perf_counter() - started
            generated = sum(r[1] for r in results)
            ttft = statistics.median(r[0] for r in results)
            print(
                f"  concurrency {n:2d}: {wall:5.2f} s wall, {generated / wall:6.1f} tok/s, "
                f"median first token {ttft:.2f} s"
            )
    finally:
        await textgen.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    args = parser.parse_args()
    asyncio.run(main(args.tokens, args.levels))
