"""vLLM's own benchmark client against the lab and against vLLM's own server, side by side.

Starts `python -m vllm.entrypoints.openai.api_server` and `textgen serve` on the same model
folder with the same engine flags (float32, eager, 2048 tokens), both kept up, and runs
`vllm bench serve` (its module, `vllm.benchmarks.serve`: the CPU wheel's `vllm` console script
cannot find its own version) against each in turn, alternating, `--rounds` times: random
dataset, `--num-prompts` prompts at `--concurrency`. Prints failed requests and output
tokens/s per target, the medians and the lab's ratio; `--write` records them in
benchmarks/RESULTS.md (the section of its own is replaced on a rerun).

    python benchmarks/vllm_bench_parity.py [--num-prompts 64] [--concurrency 16] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_section  # noqa: E402
from textgen import DEFAULT_MODEL, Settings, embedded  # noqa: E402

SECTION = "## vLLM's benchmark client: the lab against vLLM's own server"
TOKEN = "bench-token"
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
              "VLLM_NO_USAGE_STATS": "1", "VLLM_LOGGING_LEVEL": "WARNING"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str], ready_url: str, name: str) -> Iterator[None]:
    log = Path(tempfile.gettempdir()) / f"bench-{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env={**os.environ, **ENGINE_ENV, **env}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(ready_url, timeout=2,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
                if response.status_code == 200 and "loading" not in response.text:
                    break
            time.sleep(1)
        else:
            raise RuntimeError(f"{name} not ready:\n{log.read_text()[-3000:]}")
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def bench(base_url: str, folder: Path, args: argparse.Namespace, seed: int,
          headers: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> dict[str, float]:
    """One `vllm bench serve` run (no cache; `headers`: more KEY=VALUE headers to send;
    `extra`: more of its flags)."""
    # This process runs vLLM's client only. Without an engine started in it, vLLM's platform
    # check can miss the CPU build and import kernels built for AVX-512, which die of SIGILL
    # on a CPU without it; naming the CPU target is right for a client on any machine.
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    bench_args = parser.parse_args([
        "--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions",
        "--model", DEFAULT_MODEL, "--tokenizer", str(folder),
        "--dataset-name", "random", "--random-input-len", str(args.input_len),
        "--random-output-len", str(args.output_len), "--ignore-eos",
        "--num-prompts", str(args.num_prompts), "--max-concurrency", str(args.concurrency),
        "--seed", str(seed), "--header", "Cache-Control=no-cache, no-store", *headers,
        "--disable-tqdm", *extra,
    ])
    os.environ["OPENAI_API_KEY"] = TOKEN  # how vLLM's client sends its bearer token
    result = main(bench_args)
    return {"completed": result["completed"], "failed": result["failed"],
            "output_throughput": result["output_throughput"],
            "median_ttft_ms": result["median_ttft_ms"], "median_itl_ms": result["median_itl_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    folder = embedded.prepare(DEFAULT_MODEL, Settings().MODEL_CACHE_DIR)
    vllm_port, lab_port = free_port(), free_port()
    flags = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "2048"]
    vllm = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
            "--served-model-name", DEFAULT_MODEL, "--host", "127.0.0.1", "--port",
            str(vllm_port), "--api-key", TOKEN, *flags]
    lab = [str(Path(sys.executable).with_name("textgen")), "serve"]
    lab_env = {"API_PORT": str(lab_port), "METRICS_PORT": "0", "VLLM_ENDPOINT": "", "API_TOKEN": TOKEN,
               "DTYPE": "float32", "RATE_LIMITS": f'{{"{DEFAULT_MODEL}": 0}}', "LOG_LEVEL": "WARNING"}
    rows: dict[str, list[dict[str, float]]] = {"vLLM server": [], "lab": []}
    with started(vllm, {}, f"http://127.0.0.1:{vllm_port}/v1/models", "vllm"), \
            started(lab, lab_env, f"http://127.0.0.1:{lab_port}/health", "lab"):
        urls = {"vLLM server": f"http://127.0.0.1:{vllm_port}", "lab": f"http://127.0.0.1:{lab_port}"}
        for url in urls.values():  # warm-up, not counted
            bench(url, folder, argparse.Namespace(**{**vars(args), "num_prompts": 8}), 0)
        for round_ in range(args.rounds):
            order = list(urls) if round_ % 2 == 0 else list(reversed(urls))
            for target in order:
                rows[target].append(bench(urls[target], folder, args, seed=round_ + 1))
    medians = {t: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
               for t, runs in rows.items()}
    ratio = medians["lab"]["output_throughput"] / medians["vLLM server"]["output_throughput"]
    lines = [
        SECTION, "",
        f"`python benchmarks/vllm_bench_parity.py --write`, {datetime.date.today()}, "
        f"{os.cpu_count()} cores ({platform.machine()}), load average "
        f"{os.getloadavg()[0]:.1f} at the end. vLLM's own client (`vllm.benchmarks.serve`, "
        f"random dataset, {args.input_len} input and {args.output_len} output tokens, "
        f"`--ignore-eos`, {args.num_prompts} prompts at concurrency {args.concurrency}) against "
        "vLLM's own server and `textgen serve` on the same SmolLM2 folder (float32, eager, both "
        f"up together), alternating, {args.rounds} rounds; medians.", "",
        "| target | completed | failed | output tok/s | median TTFT ms | median ITL ms |",
        "|---|---|---|---|---|---|",
    ]
    for target, m in medians.items():
        failed = sum(r["failed"] for r in rows[target])
        lines.append(f"| {target} | {m['completed']:.0f} | {failed} (all rounds) | "
                     f"{m['output_throughput']:.1f} | {m['median_ttft_ms']:.0f} | "
                     f"{m['median_itl_ms']:.0f} |")
    lines += ["", f"- The lab's output throughput is **{ratio:.2f}x** vLLM's server's "
              "(target at least 0.95x).", ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
