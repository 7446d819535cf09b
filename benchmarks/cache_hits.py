"""Cache hits through the full API: p50 at concurrency 1 and req/s at concurrency 32.

Starts a redis-server and `textgen serve` (real engine, default model) on free ports, fills the
cache with one real completion, then drives the same request with `wrk` (Debian package), which
leaves the CPU to the server. Prints the figures; results are kept in benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/cache_hits.py [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.processes import lab_server, redis_server  # noqa: E402
from textgen import DEFAULT_MODEL  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (or `make bench`)")
    with redis_server() as redis_url:
        env = {"REDIS_URL": redis_url, "RATE_LIMITS": json.dumps({DEFAULT_MODEL: 0}),
               "LOG_LEVEL": "WARNING"}
        with lab_server(env, token=TOKEN, wait_model=DEFAULT_MODEL) as lab:
            url = lab.base_url + "/v1/completions"
            first = httpx.post(url, json=BODY, headers=lab.headers, timeout=120)
            assert first.status_code == 200, first.text
            check = httpx.post(url, json=BODY, headers=lab.headers, timeout=10)
            assert check.headers["X-Cache"] == "HIT", check.headers
            wrk(url, 4, 1, 2)  # warm-up
            c1 = wrk(url, 1, 1, args.duration)
            c32 = wrk(url, 32, 2, args.duration)
    print(f"cache hit, full API, Redis on loopback ({DEFAULT_MODEL})")
    print(f"  concurrency 1 : p50 {c1['p50_ms']:.2f} ms, p99 {c1['p99_ms']:.2f} ms, "
          f"{c1['rps']:.0f} req/s, non-2xx {c1['non_2xx']:.0f}")
    print(f"  concurrency 32: {c32['rps']:.0f} req/s, p50 {c32['p50_ms']:.2f} ms, "
          f"p99 {c32['p99_ms']:.2f} ms, non-2xx {c32['non_2xx']:.0f}")
    print("  targets: p50 < 2 ms at c=1; >= 800 req/s at c=32 "
          "(LiteLLM 1.108.7, same machine: 140-160 req/s, 6-7 ms p50)")


if __name__ == "__main__":
    main()
