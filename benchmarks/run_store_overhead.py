"""What keeping runs costs: generation throughput and cache-hit latency, recording on vs off.

Starts `textgen serve` (real engine, default model, no rate limit, the run store in a temporary
LAB_DATA_DIR) and, on that one lab, side by side:

- vLLM's own benchmark client (`vllm.benchmarks.serve`, random dataset, no cache) with
  `X-Lab-Record: 1` and with `X-Lab-Record: 0`, alternating, `--rounds` rounds: output tokens/s;
- one cached completion asked `--hits` times with the header on and off, interleaved request by
  request: the median latency of each and the difference.

Then checks that every recorded request is in the store. Prints the figures; `--write` keeps
them in benchmarks/RESULTS.md.

    python benchmarks/run_store_overhead.py [--num-prompts 64] [--concurrency 16] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_section  # noqa: E402
from benchmarks.vllm_bench_parity import TOKEN, free_port, started  # noqa: E402
from benchmarks.vllm_bench_parity import bench as parity_bench  # noqa: E402
from textgen import DEFAULT_MODEL, Settings, embedded  # noqa: E402

SECTION = "## Kept runs: what recording costs"
HIT = {"model": DEFAULT_MODEL, "prompt": "Escreva um poema sobre o mar", "max_tokens": 16,
       "temperature": 0}


def bench(base_url: str, folder: Path, args: argparse.Namespace, seed: int,
          record: bool) -> dict[str, float]:
    return parity_bench(base_url, folder, args, seed, (f"X-Lab-Record={1 if record else 0}",))


def hits(base_url: str, count: int) -> dict[str, float]:
    """Median latency of a cache hit with the header on and off, interleaved."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    seconds: dict[bool, list[float]] = {True: [], False: []}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        assert client.post("/v1/completions", json=HIT).status_code == 200  # fills the cache
        for n in range(2 * count):
            record = n % 2 == 0
            started_at = time.perf_counter()
            r = client.post("/v1/completions", json=HIT,
                            headers={"X-Lab-Record": "1" if record else "0"})
            seconds[record].append(time.perf_counter() - started_at)
            assert r.headers["x-cache"] == "HIT", r.headers
    return {"on_ms": statistics.median(seconds[True]) * 1000,
            "off_ms": statistics.median(seconds[False]) * 1000}


def kept(base_url: str, mode: str = "api") -> int:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    total, before = 0, None
    while True:
        params: dict[str, object] = {"mode": mode, "limit": 1000}
        if before is not None:
            params["before"] = before
        page = httpx.get(f"{base_url}/lab/runs", params=params, headers=headers,
                         timeout=60).json()["data"]
        total += len(page)
        if len(page) < 1000:
            return total
        before = page[-1]["created"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hits", type=int, default=300)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    folder = embedded.prepare(DEFAULT_MODEL, Settings().MODEL_CACHE_DIR)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"API_PORT": str(port), "METRICS_PORT": "0", "VLLM_ENDPOINT": "", "API_TOKEN": TOKEN,
           "DTYPE": "float32", "RATE_LIMITS": f'{{"{DEFAULT_MODEL}": 0}}', "LOG_LEVEL": "WARNING",
           "REDIS_URL": "", "LAB_DATA_DIR": tempfile.mkdtemp(prefix="bench-runs-")}
    lab = [str(Path(sys.executable).with_name("textgen")), "serve"]
    rows: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    with started(lab, env, f"{url}/health", "lab"):
        bench(url, folder, argparse.Namespace(**{**vars(args), "num_prompts": 8}), 0, False)
        for round_ in range(args.rounds):
            for record in ((True, False) if round_ % 2 == 0 else (False, True)):
                rows[record].append(bench(url, folder, args, round_ + 1, record))
        hit = hits(url, args.hits)
        time.sleep(1.0)  # the writer's last batch
        stored = kept(url)
    on = statistics.median(r["output_throughput"] for r in rows[True])
    off = statistics.median(r["output_throughput"] for r in rows[False])
    recorded = sum(r["completed"] for r in rows[True]) + args.hits
    failed = sum(r["failed"] for runs in rows.values() for r in runs)
    lines = [
        SECTION, "",
        f"`python benchmarks/run_store_overhead.py --write`, {datetime.date.today()}, "
        f"{os.cpu_count()} cores ({platform.machine()}), load average "
        f"{os.getloadavg()[0]:.1f} at the end. One `textgen serve` (SQLite run store), vLLM's "
        f"client ({args.input_len} in / {args.output_len} out tokens, {args.num_prompts} prompts "
        f"at concurrency {args.concurrency}, no cache) with `X-Lab-Record: 1` and `0`, "
        f"alternating, {args.rounds} rounds, medians; then {args.hits} cache hits each way, "
        "interleaved.", "",
        "| | recording on | recording off | on / off |", "|---|---|---|---|",
        f"| output tok/s | {on:.1f} | {off:.1f} | {on / off:.3f} |",
        f"| cache hit, median ms | {hit['on_ms']:.3f} | {hit['off_ms']:.3f} | "
        f"{hit['on_ms'] - hit['off_ms']:+.3f} ms |", "",
        f"- Failed requests: {failed}. Runs kept: {stored} of the {recorded} recorded requests "
        "(every one).",
        f"- Throughput with recording is {on / off:.3f}x without (target: no more than 2% "
        "below, 0.98x); a recorded cache hit costs "
        f"{hit['on_ms'] - hit['off_ms']:+.3f} ms (target under 0.1 ms).", "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
