"""Cache hits through the full API: p50 at concurrency 1 and req/s at concurrency 32.

Starts a redis-server and `textgen serve` (real engine, default model) on free ports, fills the
cache with one real completion, then drives the same request with `wrk` (Debian package), which
leaves the CPU to the server. Prints the figures; results are kept in benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/cache_hits.py [--duration 10] [--rounds 1] [--baseline DIR]
                                              [--write]

`--baseline DIR` starts the `textgen serve` of another checkout (an older main) beside, with
the same settings, and measures both in turn; `--write` replaces this benchmark's section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import write_section  # noqa: E402
from tests.support.processes import lab_server, redis_server  # noqa: E402
from textgen import DEFAULT_MODEL  # noqa: E402

SECTION = "## Cache hits through the full API"
TOKEN = "bench-token"
BODY = {"model": DEFAULT_MODEL, "prompt": "Escreva um poema sobre o mar", "max_tokens": 32,
        "temperature": 0.7}


def wrk(url: str, connections: int, threads: int, duration: int) -> dict[str, float]:
    script = (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(BODY))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n'
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
         "-s", f.name, url],
        capture_output=True, text=True, check=True,
    ).stdout
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
        "non_2xx": float(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0.0,
    }


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def measure(url: str, headers: dict[str, str], duration: int) -> dict[str, dict[str, float]]:
    c1 = wrk(url, 1, 1, duration)
    c32 = wrk(url, 32, 2, duration)
    return {"c1": c1, "c32": c32}


def fill(url: str, headers: dict[str, str]) -> None:
    """One real generation fills the entry; the next request must be a hit."""
    first = httpx.post(url, json=BODY, headers=headers, timeout=120)
    assert first.status_code == 200, first.text
    check = httpx.post(url, json=BODY, headers=headers, timeout=10)
    assert check.headers["X-Cache"] == "HIT", check.headers
    wrk(url, 4, 1, 2)  # warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of older code whose `textgen serve` runs beside")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (or `make bench`)")
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"lab": []}
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(redis_server())
        env = {"REDIS_URL": redis_url, "RATE_LIMITS": json.dumps({DEFAULT_MODEL: 0}),
               "LOG_LEVEL": "WARNING"}
        labs = {"lab": stack.enter_context(
            lab_server(env, token=TOKEN, wait_model=DEFAULT_MODEL))}
        if args.baseline is not None:
            # The older checkout's code first on the path: its textgen, api and ui packages.
            # Its own Redis database, so its cache entry is its own.
            labs["main before"] = stack.enter_context(lab_server(
                {**env, "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/1",
                 "PYTHONPATH": str(args.baseline.resolve())},
                token=TOKEN, wait_model=DEFAULT_MODEL))
            runs["main before"] = []
        for lab in labs.values():
            fill(lab.base_url + "/v1/completions", lab.headers)
        for round_ in range(args.rounds):
            order = list(labs) if round_ % 2 == 0 else list(reversed(labs))
            for name in order:
                lab = labs[name]
                runs[name].append(measure(lab.base_url + "/v1/completions", lab.headers,
                                          args.duration))
    lines = [SECTION, "",
             f"`python benchmarks/cache_hits.py --duration {args.duration} --rounds "
             f"{args.rounds}{' --baseline DIR' if args.baseline else ''}`, "
             f"{datetime.date.today()}, {os.cpu_count()} cores ({platform.machine()}), "
             f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the "
             "end. `textgen serve` (uvicorn, one process, real engine with the default model "
             "loaded and idle), Redis on loopback, bearer auth on, wrk on the same machine; the "
             "seed's example body (`max_tokens` 32) answered from Redis after one real "
             "generation filled the entry"
             + (f"; `main before` is `textgen serve` of `{args.baseline}` (older code of ours), "
                "up at the same time, measured in turn" if args.baseline else "")
             + f"; medians of {args.rounds} round(s).", "",
             "| server | c=1 p50 ms | c=1 p99 ms | c=1 req/s | c=32 p50 ms | c=32 p99 ms | "
             "c=32 req/s |", "|---|---|---|---|---|---|---|"]
    for name, rounds in runs.items():
        m = {c: {k: statistics.median(r[c][k] for r in rounds) for k in rounds[0][c]}
             for c in ("c1", "c32")}
        lines.append(f"| {name} | {m['c1']['p50_ms']:.2f} | {m['c1']['p99_ms']:.2f} | "
                     f"{m['c1']['rps']:.0f} | {m['c32']['p50_ms']:.1f} | "
                     f"{m['c32']['p99_ms']:.1f} | {m['c32']['rps']:.0f} |")
    lines += ["", "Targets: p50 < 2 ms at concurrency 1; >= 800 req/s at 32 (LiteLLM 1.108.7 "
              "proxy with its Redis cache, one worker, same machine: 140-160 req/s, 6-7 ms "
              "p50).", ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
