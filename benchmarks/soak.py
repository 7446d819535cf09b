"""Soak: mixed traffic against the real engine for ten minutes; no 5xx, and memory that stays.

Starts a redis-server and `textgen serve` (real engine, default model), then runs, at once:
cache hits (a few hot prompts), misses (new prompts), streams read to the end, streams whose
client leaves after the first chunk, identical requests sent together (single flight), bad
requests (400/404) and enough traffic to meet the rate limit (429). Every 10 s it samples the
resident memory of the lab's process and of its engine-core processes. Prints counts by
status, any 5xx, and the memory growth after the warm-up; `--write` records them in
benchmarks/RESULTS.md.

    python benchmarks/soak.py [--minutes 10] [--warmup 2] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.results import write_section  # noqa: E402
from tests.support.processes import LabServer, lab_server, redis_server  # noqa: E402
from textgen import DEFAULT_MODEL  # noqa: E402

SECTION = "## Soak: ten minutes of mixed traffic"
LIMIT = 600  # requests per minute for the model: the misses below meet it now and then
HOT = [f"Tell me about the sea, part {i}." for i in range(5)]


def rss(lab: LabServer) -> tuple[int, int]:
    """Resident bytes of the lab's own process, and of the engine processes it started."""
    main = psutil.Process(lab.proc.pid)
    children = sum(c.memory_info().rss for c in main.children(recursive=True))
    return main.memory_info().rss, children


async def traffic(client: httpx.AsyncClient, kind: str, stop: float, seen: Counter[str],
                  errors: list[str]) -> None:
    rng = random.Random(kind)
    i = 0
    while time.monotonic() < stop:
        i += 1
        body: dict[str, object] = {"model": DEFAULT_MODEL, "max_tokens": 8, "temperature": 0}
        try:
            if kind == "hit":
                body["prompt"] = rng.choice(HOT)
                response = await client.post("/v1/completions", json=body)
            elif kind == "miss":
                body["prompt"] = f"Miss {kind} {i} {rng.random()}"
                response = await client.post("/v1/completions", json=body)
            elif kind == "stream":
                body.update(prompt=f"Stream {i} {rng.random()}", stream=True)
                async with client.stream("POST", "/v1/completions", json=body) as response:
                    async for _ in response.aiter_lines():
                        pass
            elif kind == "leave":  # the client hangs up after the first chunk
                body.update(prompt=f"Leave {i} {rng.random()}", stream=True, max_tokens=200,
                            ignore_eos=True)
                async with client.stream("POST", "/v1/completions", json=body) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            break
            elif kind == "together":  # identical requests at once: one generation
                body["prompt"] = f"Together {i} {rng.random()}"
                responses = await asyncio.gather(*(client.post("/v1/completions", json=body)
                                                   for _ in range(4)))
                for r in responses:
                    seen[f"{r.status_code} {r.headers.get('x-cache', '')}".strip()] += 1
                    if r.status_code >= 500:
                        errors.append(r.text[:200])
                await asyncio.sleep(max(backoff(r) for r in responses))
                continue
            else:  # bad requests
                bad = rng.choice([{"model": "no/such", "prompt": "x"},
                                  {"model": DEFAULT_MODEL, "prompt": "x", "temperature": 9},
                                  {"model": DEFAULT_MODEL}])
                response = await client.post("/v1/completions", json=bad)
        except httpx.HTTPError as exc:
            seen[f"client error {type(exc).__name__}"] += 1
            continue
        status = response.status_code
        seen[f"{status} {response.headers.get('x-cache', '')}".strip()] += 1
        if status >= 500:
            errors.append(f"{kind}: {status}")
        await asyncio.sleep(backoff(response) or rng.uniform(0.0, 0.2))


def backoff(response: httpx.Response) -> float:
    """A refused client waits as told (Retry-After, at most 5 s), as the `openai` client does;
    without this the soak's mix is mostly instant 429s instead of work for the engine."""
    if response.status_code != 429:
        return 0.0
    try:
        return min(float(response.headers.get("retry-after", 1)), 5.0)
    except ValueError:
        return 1.0


async def main_async(args: argparse.Namespace) -> None:
    with redis_server() as redis_url:
        env = {"REDIS_URL": redis_url, "RATE_LIMITS": json.dumps({DEFAULT_MODEL: LIMIT}),
               "LOG_LEVEL": "WARNING"}
        with lab_server(env, token="soak-token", wait_model=DEFAULT_MODEL) as lab:
            seen: Counter[str] = Counter()
            errors: list[str] = []
            samples: list[tuple[float, int, int]] = []
            started = time.monotonic()
            stop = started + args.minutes * 60
            async with httpx.AsyncClient(base_url=lab.base_url, headers=lab.headers,
                                         timeout=120) as client:
                kinds = ["hit", "hit", "miss", "stream", "leave", "together", "bad"]
                workers = [asyncio.create_task(traffic(client, k, stop, seen, errors))
                           for k in kinds]
                while time.monotonic() < stop:
                    samples.append((time.monotonic() - started, *rss(lab)))
                    await asyncio.sleep(10)
                await asyncio.gather(*workers)
            samples.append((time.monotonic() - started, *rss(lab)))
    warm = [s for s in samples if s[0] >= args.warmup * 60]
    base_main, base_engine = warm[0][1], warm[0][2]
    end_main, end_engine = samples[-1][1], samples[-1][2]
    growth_main = (end_main - base_main) / base_main * 100
    growth_engine = (end_engine - base_engine) / base_engine * 100
    total = sum(seen.values())
    five = sum(n for k, n in seen.items() if k[:1] == "5")
    mb = 1024 * 1024
    lines = [
        SECTION, "",
        f"`python benchmarks/soak.py --write`, {datetime.date.today()}, {os.cpu_count()} cores "
        f"({platform.machine()}), load average {os.getloadavg()[0]:.1f} at the end. "
        f"`textgen serve` (real engine, default model, Redis), {args.minutes:g} minutes of "
        "seven clients at once: hot prompts (hits), new prompts (misses), streams read to the "
        "end, streams left after their first chunk, four identical requests together (single "
        f"flight), bad requests; the model's limit is {LIMIT}/min, so misses meet it (a refused "
        "client waits as its Retry-After says, at most 5 s).", "",
        f"- {total} responses, **{five} with a 5xx**: "
        + ", ".join(f"{k}: {n}" for k, n in sorted(seen.items())),
        f"- Resident memory after {args.warmup:g} min of warm-up -> at the end: lab process "
        f"{base_main / mb:.0f} -> {end_main / mb:.0f} MB (**{growth_main:+.1f}%**), engine "
        f"processes {base_engine / mb:.0f} -> {end_engine / mb:.0f} MB ({growth_engine:+.1f}%)"
        " (target: under 5% growth).", "",
    ]
    if errors:
        lines += ["5xx seen:", *[f"    {e}" for e in errors[:10]], ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--write", action="store_true")
    asyncio.run(main_async(parser.parse_args()))
