"""The Benchmark tab's sweep against `vllm bench serve`, same lab, same settings, side by side.

Starts the lab's API in this process (real engine, default model, float32, no rate limit) and,
at each concurrency, alternately runs the Benchmark tab's own sweep (`ui.sweep_runner.sweep`,
in-process through TextGen, what the browser's "Run sweep" calls) and vLLM's benchmark client
(`vllm.benchmarks.serve`, in a process of its own, over HTTP against the same lab, random
dataset, `--ignore-eos`, cache bypassed) with the same prompt and output lengths and the same
number of requests. Prints output tokens/s, requests/s, median TTFT and median ITL for both
and the tab's ratio to vLLM's client; `--write` records them in benchmarks/RESULTS.md.

The target: the tab's figures within 15% of `vllm bench serve`'s.

    python benchmarks/ui_sweep_parity.py [--levels 1,2,4] [--batches 3] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import socket
import statistics
import sys
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_section  # noqa: E402

SECTION = "## The Benchmark tab against `vllm bench serve`"
TOKEN = "bench-token"
FIGURES = ("output_throughput", "request_throughput", "median_ttft_ms", "median_itl_ms")
LABELS = {"output_throughput": "output tok/s", "request_throughput": "requests/s",
          "median_ttft_ms": "TTFT p50 ms", "median_itl_ms": "ITL p50 ms"}
# vLLM's client as a user runs it: a process of its own (not sharing this one's GIL).
CLIENT = """
import json, sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
result = main(parser.parse_args(sys.argv[2:]))
print("RESULT " + json.dumps({k: result[k] for k in sys.argv[1].split(",")}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bench_client(base_url: str, folder: Path, model: str, concurrency: int, count: int,
                       args: argparse.Namespace, seed: int) -> dict[str, float]:
    argv = [
        "--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions",
        "--model", model, "--tokenizer", str(folder), "--dataset-name", "random",
        "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
        "--ignore-eos", "--num-prompts", str(count), "--max-concurrency", str(concurrency),
        "--seed", str(seed), "--header", "Cache-Control=no-cache, no-store", "--disable-tqdm",
    ]
    # VLLM_TARGET_DEVICE: a process that runs vLLM's client and no engine can otherwise miss
    # the CPU build and import AVX-512 kernels, which die of SIGILL on CPUs without it.
    env = {**os.environ, "OPENAI_API_KEY": TOKEN, "VLLM_LOGGING_LEVEL": "WARNING",
           "VLLM_TARGET_DEVICE": "cpu"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, ",".join(FIGURES), *argv, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"vllm bench serve failed:\n{out.decode()[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


async def tab_sweep(textgen, model: str, concurrency: int, count: int,
                    args: argparse.Namespace, seed: int) -> dict[str, float]:
    from ui import sweep_runner

    rows = []
    sweeping = sweep_runner.sweep(textgen, model, [(concurrency, count)], args.input_len,
                                  args.output_len, seed=seed)
    async with contextlib.aclosing(sweeping):
        async for progress in sweeping:
            rows = progress.rows
    row = rows[-1]
    if row["failed"]:
        raise RuntimeError(f"the sweep had {row['failed']} failed requests")
    return {"output_throughput": row["output tok/s"], "request_throughput": row["requests/s"],
            "median_ttft_ms": row["TTFT p50 ms"], "median_itl_ms": row["ITL p50 ms"]}


async def run(args: argparse.Namespace) -> dict[int, dict[str, dict[str, float]]]:
    # Before vLLM is imported: it reads these once.
    os.environ.update({"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                       "VLLM_LOGGING_LEVEL": "WARNING"})
    import uvicorn

    from api.app import create_app
    from textgen import DEFAULT_MODEL, Settings, embedded

    port = free_port()
    settings = Settings(API_PORT=port, METRICS_PORT=0, VLLM_ENDPOINT="", API_TOKEN=TOKEN,
                        DTYPE="float32", RATE_LIMITS=json.dumps({DEFAULT_MODEL: 0}),
                        LOG_LEVEL="WARNING")
    folder = embedded.prepare(DEFAULT_MODEL, settings.MODEL_CACHE_DIR)
    app = create_app(settings, ui=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    serving = asyncio.create_task(server.serve())
    base_url = f"http://127.0.0.1:{port}"
    results: dict[int, dict[str, list[dict[str, float]]]] = {}
    try:
        async with httpx.AsyncClient() as client:  # until the default model is loaded
            while True:
                if serving.done():
                    serving.result()  # the server failed: say why
                    raise RuntimeError("the lab's server stopped")
                if server.started:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{base_url}/ready")).status_code == 200:
                            break
                await asyncio.sleep(1)
        textgen = app.state.textgen
        # Warm-up, not counted: both paths once.
        await tab_sweep(textgen, DEFAULT_MODEL, 2, 4, args, seed=0)
        await bench_client(base_url, folder, DEFAULT_MODEL, 2, 4, args, seed=0)
        for concurrency in args.levels:
            count = concurrency * args.batches
            runs = results.setdefault(concurrency, {"tab": [], "vllm bench": []})
            for round_ in range(args.rounds):
                order = ["tab", "vllm bench"] if round_ % 2 == 0 else ["vllm bench", "tab"]
                for who in order:
                    seed = round_ + 1
                    figures = (await tab_sweep(textgen, DEFAULT_MODEL, concurrency, count, args,
                                               seed) if who == "tab" else
                               await bench_client(base_url, folder, DEFAULT_MODEL, concurrency,
                                                  count, args, seed))
                    runs[who].append(figures)
                    print(concurrency, who, figures, flush=True)
    finally:
        server.should_exit = True
        await serving
    return {c: {who: {k: statistics.median(r[k] for r in rs) for k in FIGURES}
                for who, rs in runs.items()} for c, runs in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,4",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--batches", type=int, default=3, help="requests per level: level x this")
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    medians = asyncio.run(run(args))

    worst = 0.0
    lines = [
        SECTION, "",
        f"`python benchmarks/ui_sweep_parity.py --write`, {datetime.date.today()}, "
        f"{os.cpu_count()} cores ({platform.machine()}), load average "
        f"{os.getloadavg()[0]:.1f} at the end. One lab (real engine, SmolLM2, float32, no rate "
        f"limit); at each concurrency the Benchmark tab's sweep (in-process, what the browser "
        f"runs) and `vllm bench serve` (its own process, over HTTP to the same lab) alternate, "
        f"{args.rounds} rounds, {args.input_len} prompt and {args.output_len} output tokens, "
        f"concurrency x {args.batches} requests per level, cache bypassed; medians. Ratio: "
        "tab / vllm bench.", "",
        "| concurrency | figure | tab | vllm bench | ratio |", "|---|---|---|---|---|",
    ]
    for concurrency, by in medians.items():
        for key in FIGURES:
            tab, ref = by["tab"][key], by["vllm bench"][key]
            ratio = tab / ref if ref else float("nan")
            worst = max(worst, abs(ratio - 1))
            lines.append(f"| {concurrency} | {LABELS[key]} | {tab:.2f} | {ref:.2f} | "
                         f"{ratio:.2f} |")
    lines += ["", f"- Largest difference: **{worst:.0%}** (target: within 15%).", ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
