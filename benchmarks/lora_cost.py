"""What LoRA costs the base model: `textgen serve` with LoRA off and on, side by side.

Starts two labs on the embedded model with the same engine flags (float32, eager, 2048
tokens), one with `ENABLE_LORA=false` and one with `ENABLE_LORA=true` (`MAX_LORA_RANK` 8,
`MAX_LORAS` 4), both kept up, and runs vLLM's own benchmark client (`vllm.benchmarks.serve`,
random dataset) against each in turn, alternating, `--rounds` times:

- the base model alone on both labs: what turning LoRA on costs requests that use no adapter;
- on the LoRA lab, the base and two adapters (rank 8, made here in PEFT's format) in
  round-robin: what serving fine-tunes beside their base costs.

Prints the medians and the ratios; `--write` records them in benchmarks/RESULTS.md (the
section of its own is replaced on a rerun).

    python benchmarks/lora_cost.py [--num-prompts 48] [--concurrency 8] [--rounds 2] [--write]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results import write_section  # noqa: E402
from benchmarks.vllm_bench_parity import TOKEN, bench, free_port, started  # noqa: E402
from tests.support.lora import make_adapter  # noqa: E402
from textgen import DEFAULT_MODEL, Settings, embedded  # noqa: E402

SECTION = "## LoRA: what enabling it and serving adapters cost the base model"
ADAPTERS = ("bench-lora-a", "bench-lora-b")


def lab_env(port: int, lora: bool) -> dict[str, str]:
    return {"API_PORT": str(port), "METRICS_PORT": "0", "VLLM_ENDPOINT": "", "API_TOKEN": TOKEN,
            "DTYPE": "float32", "MAX_MODEL_LEN": "2048", "ENFORCE_EAGER": "true",
            "RATE_LIMITS": f'{{"{DEFAULT_MODEL}": 0}}', "LOG_LEVEL": "WARNING",
            "REDIS_URL": "", "ENABLE_LORA": str(lora).lower(), "MAX_LORA_RANK": "8",
            "MAX_LORAS": "4"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-prompts", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()

    folder = embedded.prepare(DEFAULT_MODEL, Settings().MODEL_CACHE_DIR)
    adapters = Path(tempfile.mkdtemp(prefix="lora-cost-"))
    off_port, on_port = free_port(), free_port()
    lab = [str(Path(sys.executable).with_name("textgen")), "serve"]
    off_url, on_url = f"http://127.0.0.1:{off_port}", f"http://127.0.0.1:{on_port}"
    runs: dict[str, list[dict[str, float]]] = {
        "LoRA off, base": [], "LoRA on, base": [], "LoRA on, base + 2 adapters": []}
    with started(lab, lab_env(off_port, False), f"{off_url}/health", "lab-lora-off"), \
            started(lab, lab_env(on_port, True), f"{on_url}/health", "lab-lora-on"):
        for seed, name in enumerate(ADAPTERS):
            path = make_adapter(adapters / name, folder, seed=seed, base_name=DEFAULT_MODEL)
            response = httpx.post(f"{on_url}/v1/load_lora_adapter", timeout=120,
                                  headers={"Authorization": f"Bearer {TOKEN}"},
                                  json={"lora_name": name, "lora_path": str(path)})
            response.raise_for_status()
        mixed = ("--lora-modules", DEFAULT_MODEL, *ADAPTERS, "--lora-assignment", "round-robin")
        targets = {"LoRA off, base": (off_url, ()), "LoRA on, base": (on_url, ()),
                   "LoRA on, base + 2 adapters": (on_url, mixed)}
        warm = argparse.Namespace(**{**vars(args), "num_prompts": 8})
        for url, extra in targets.values():  # warm-up, not counted
            bench(url, folder, warm, 0, extra=extra)
        for round_ in range(args.rounds):
            order = list(targets) if round_ % 2 == 0 else list(reversed(targets))
            for target in order:
                url, extra = targets[target]
                runs[target].append(bench(url, folder, args, seed=round_ + 1, extra=extra))
    medians = {t: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for t, rs in runs.items()}
    base = medians["LoRA off, base"]["output_throughput"]
    lines = [
        SECTION, "",
        f"`python benchmarks/lora_cost.py --write`, {datetime.date.today()}, {os.cpu_count()} "
        f"cores ({platform.machine()}), load average {os.getloadavg()[0]:.1f} at the end. "
        "Two `textgen serve` labs on the embedded SmolLM2 (float32, eager, 2048 tokens), LoRA "
        "off and on (`MAX_LORA_RANK` 8, `MAX_LORAS` 4), both up together; vLLM's own client "
        f"(random dataset, {args.input_len} input and {args.output_len} output tokens, "
        f"`--ignore-eos`, {args.num_prompts} prompts at concurrency {args.concurrency}, no "
        f"cache), alternating, {args.rounds} rounds; medians. The adapters are rank 8 on "
        "q_proj and v_proj, requests assigned round-robin over the base and both.", "",
        "| target | completed | failed | output tok/s | vs LoRA off | median TTFT ms | "
        "median ITL ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for target, m in medians.items():
        failed = sum(r["failed"] for r in runs[target])
        lines.append(f"| {target} | {m['completed']:.0f} | {failed} (all rounds) | "
                     f"{m['output_throughput']:.1f} | {m['output_throughput'] / base:.2f}x | "
                     f"{m['median_ttft_ms']:.0f} | {m['median_itl_ms']:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
