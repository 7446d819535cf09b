"""Do huge requests stall the others? /health and a cache hit while clients send 4 MB prompts.

Starts `textgen serve` (real engine, default model, in-process cache), fills one cache entry,
then runs `--senders` clients that each post a `--prompt-mb` MB prompt in a loop (the lab
refuses each: past the model's context) while one client times GET /health and another a
cache hit, one after the other, for `--duration` seconds. Prints p50/p99/max of both and how
many big requests were answered, and the same figures with no big requests first, as a
baseline. `--write` records them in benchmarks/RESULTS.md.

    python benchmarks/large_prompts.py [--senders 4] [--prompt-mb 4] [--duration 20] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.results import write_section  # noqa: E402
from tests.support.processes import LabServer, lab_server  # noqa: E402
from textgen import DEFAULT_MODEL  # noqa: E402

SECTION = "## Huge requests do not stall the others"
HIT = {"model": DEFAULT_MODEL, "prompt": "Escreva um poema sobre o mar", "max_tokens": 8,
       "temperature": 0}


async def timed(client: httpx.AsyncClient, method: str, path: str, stop: float,
                **kwargs: object) -> list[float]:
    times = []
    while time.monotonic() < stop:
        started = time.perf_counter()
        response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text[:200]
        await asyncio.sleep(0.01)
    return times


async def sender(client: httpx.AsyncClient, body: bytes, stop: float) -> list[int]:
    statuses = []
    while time.monotonic() < stop:
        response = await client.post("/v1/completions", content=body,
                                      headers={"Content-Type": "application/json"})
        statuses.append(response.status_code)
    return statuses


def summary(times: list[float]) -> str:
    q = statistics.quantiles(times, n=100)
    return f"p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, max {max(times):.1f} ms ({len(times)} requests)"


async def measure(lab: LabServer, senders: int, prompt_mb: float, duration: float) -> dict[str, str]:
    prompt = "lorem ipsum " * int(prompt_mb * 1024 * 1024 / 12)
    body = httpx.Request("POST", "/", json={"model": DEFAULT_MODEL, "prompt": prompt,
                                              "max_tokens": 4}).content
    limits = httpx.Limits(max_connections=senders + 2)
    async with httpx.AsyncClient(base_url=lab.base_url, headers=lab.headers, timeout=120,
                                 limits=limits) as client:
        assert (await client.post("/v1/completions", json=HIT)).status_code == 200  # fill it
        stop = time.monotonic() + duration
        results = await asyncio.gather(
            timed(client, "GET", "/health", stop),
            timed(client, "POST", "/v1/completions", stop, json=HIT),
            *(sender(client, body, stop) for _ in range(senders)),
        )
    health, hit, *sent = results
    statuses = [s for batch in sent for s in batch]
    return {"health": summary(health), "hit": summary(hit),
            "big": f"{len(statuses)} answered ({', '.join(sorted({str(s) for s in statuses}))})"
            if statuses else "none"}


async def main_async(args: argparse.Namespace) -> None:
    env = {"RATE_LIMITS": f'{{"{DEFAULT_MODEL}": 0}}', "LOG_LEVEL": "WARNING"}
    with lab_server(env, token="bench-token", wait_model=DEFAULT_MODEL) as lab:
        baseline = await measure(lab, 0, args.prompt_mb, args.duration / 2)
        loaded = await measure(lab, args.senders, args.prompt_mb, args.duration)
    lines = [
        SECTION, "",
        f"`python benchmarks/large_prompts.py --write`, {datetime.date.today()}, "
        f"{os.cpu_count()} cores ({platform.machine()}), load average {os.getloadavg()[0]:.1f} "
        f"at the end. `textgen serve` (real engine, default model); {args.senders} clients "
        f"post a {args.prompt_mb:g} MB prompt in a loop for {args.duration:g} s while one "
        "client times GET /health and another a cache hit.", "",
        "| | /health | cache hit | big requests |", "|---|---|---|---|",
        f"| alone | {baseline['health']} | {baseline['hit']} | — |",
        f"| {args.senders} x {args.prompt_mb:g} MB | {loaded['health']} | {loaded['hit']} | "
        f"{loaded['big']} |", "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--prompt-mb", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--write", action="store_true")
    asyncio.run(main_async(parser.parse_args()))
