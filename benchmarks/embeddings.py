"""Embeddings through the lab against vLLM's own server, and what a cache hit costs.

Starts vLLM's OpenAI server and a `textgen serve` lab on the embedded SmolLM2 served as an
embedding model (`--runner pooling --convert embed`, float32, eager, 2048 tokens), both kept
up, and sends each in turn, alternating, `--rounds` times, `--requests` `/v1/embeddings`
requests of `--texts` distinct texts each at concurrency `--concurrency` (the lab's cache
bypassed with `Cache-Control: no-cache, no-store`): texts embedded per second, and the ratio.
Then one request of 32 texts is sent to the lab `--hits` times in a row: its cache-hit
latency, beside the same request's latency as a miss (vLLM's server computing it).

Prints the medians; `--write` records them in benchmarks/RESULTS.md (its own section).

    python benchmarks/embeddings.py [--requests 24] [--texts 32] [--concurrency 4] [--rounds 3] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_section  # noqa: E402
from benchmarks.vllm_bench_parity import TOKEN, free_port, started  # noqa: E402
from textgen import EMBEDDING_MODEL, Settings, embedded  # noqa: E402
from textgen.engines.vllm_options import VllmOptions, serve_argv  # noqa: E402

SECTION = "## Embeddings: the lab against vLLM's server, and a cache hit"
FLAGS = ("--runner", "pooling", "--convert", "embed")
SERVER, LAB = "vLLM's server", "the lab (in-process)"
WORDS = ("cat", "mat", "rug", "kitten", "market", "share", "stock", "price", "river", "bank",
         "money", "tree", "leaf", "rain", "cloud", "sun", "moon", "star", "code", "test", "lab",
         "model", "vector", "space", "token")


def text(i: int, j: int) -> str:
    """A distinct sentence of ~40 tokens for request i, text j."""
    words = [WORDS[(i * 7 + j * 3 + k * k) % len(WORDS)] for k in range(30)]
    return f"Request {i} text {j}: " + " ".join(words) + "."


async def throughput(url: str, args: argparse.Namespace, offset: int) -> float:
    """Texts embedded per second: `requests` requests of `texts` texts, `concurrency` at once."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Cache-Control": "no-cache, no-store"}
    queue = list(range(offset, offset + args.requests))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            i = queue.pop()
            body = {"model": EMBEDDING_MODEL, "input": [text(i, j) for j in range(args.texts)]}
            response = await client.post("/v1/embeddings", json=body, headers=headers)
            response.raise_for_status()

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started_at = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(args.concurrency)))
        return args.requests * args.texts / (time.perf_counter() - started_at)


async def latencies(url: str, body: dict[str, object], times: int) -> list[float]:
    """Milliseconds per request, one after another."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    out = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        for _ in range(times):
            started_at = time.perf_counter()
            response = await client.post("/v1/embeddings", json=body, headers=headers)
            response.raise_for_status()
            out.append((time.perf_counter() - started_at) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hits", type=int, default=200)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    folder = embedded.prepare(EMBEDDING_MODEL, Settings().MODEL_CACHE_DIR)
    vllm_port, lab_port = free_port(), free_port()
    vllm_url, lab_url = f"http://127.0.0.1:{vllm_port}", f"http://127.0.0.1:{lab_port}"
    # The server gets the very flags the lab gives its engine (engines/vllm_options.serve_argv:
    # --max-num-batched-tokens among them) and the same KV cache space: the engines compared
    # are the same, what differs is what serves them.
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    options = VllmOptions(dtype="float32", max_model_len=2048, enforce_eager=True,
                          serve_args=FLAGS)
    server = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--port",
              str(vllm_port), *serve_argv(EMBEDDING_MODEL, folder, options)]
    server_env = {"VLLM_CPU_KVCACHE_SPACE": str(Settings().VLLM_CPU_KVCACHE_SPACE)}
    lab = [str(Path(sys.executable).with_name("textgen")), "serve"]
    lab_env = {"API_PORT": str(lab_port), "METRICS_PORT": "0", "VLLM_ENDPOINT": "",
               "API_TOKEN": TOKEN, "MODEL": EMBEDDING_MODEL, "DTYPE": "float32",
               "MAX_MODEL_LEN": "2048", "ENFORCE_EAGER": "true", "LOG_LEVEL": "WARNING",
               "RATE_LIMITS": json.dumps({EMBEDDING_MODEL: 0}), "REDIS_URL": "",
               "VLLM_SERVE_ARGS": json.dumps({EMBEDDING_MODEL: " ".join(FLAGS)})}
    rates: dict[str, list[float]] = {SERVER: [], LAB: []}
    with started(server, server_env, f"{vllm_url}/v1/models", "vllm-embed"), \
            started(lab, lab_env, f"{lab_url}/ready", "lab-embed"):
        targets = {SERVER: vllm_url, LAB: lab_url}
        for url in targets.values():  # warm-up, not counted
            asyncio.run(throughput(url, argparse.Namespace(**{**vars(args), "requests": 4}), 10**6))
        for round_ in range(args.rounds):
            order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
            for name in order:
                offset = (round_ * 2 + order.index(name) + 1) * 10_000
                rates[name].append(asyncio.run(throughput(targets[name], args, offset)))
        body = {"model": EMBEDDING_MODEL, "input": [text(-1, j) for j in range(32)]}
        misses = asyncio.run(latencies(vllm_url, body, 10))
        asyncio.run(latencies(lab_url, body, 1))  # the miss that fills the cache
        hits = asyncio.run(latencies(lab_url, body, args.hits))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    ratio = medians[LAB] / medians[SERVER]
    hits.sort()
    lines = [
        SECTION, "",
        f"`python benchmarks/embeddings.py --write`, {datetime.date.today()}, {os.cpu_count()} "
        f"cores ({platform.machine()}), load average {os.getloadavg()[0]:.1f} at the end. vLLM's "
        "server and a `textgen serve` lab on the embedded SmolLM2 as an embedding model "
        "(`--runner pooling --convert embed`, float32, eager; the server with the flags the "
        "lab gives its engine), both up together; "
        f"{args.requests} `/v1/embeddings` requests of {args.texts} distinct ~40-token texts "
        f"at concurrency {args.concurrency}, the lab's cache bypassed, alternating, "
        f"{args.rounds} rounds; medians.", "",
        "| target | texts/s (median) | rounds | vs vLLM's server |",
        "|---|---|---|---|",
    ]
    for name, value in medians.items():
        lines.append(f"| {name} | {value:.1f} | {', '.join(f'{r:.1f}' for r in rates[name])} | "
                     f"{value / medians[SERVER]:.2f}x |")
    lines += [
        "",
        f"A 32-text request: computed by vLLM's server in {statistics.median(misses):.1f} ms "
        f"(median of 10); answered from the lab's cache (in-process tier) in "
        f"{statistics.median(hits):.2f} ms median, {hits[int(len(hits) * 0.95) - 1]:.2f} ms p95 "
        f"({args.hits} hits in a row, one client). Ratio of the lab's throughput to the "
        f"server's: {ratio:.2f}x (target ≥ 0.95x).",
    ]
    text_ = "\n".join(lines) + "\n"
    print(text_)
    if args.write:
        write_section(SECTION, text_)


if __name__ == "__main__":
    main()
