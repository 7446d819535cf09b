"""Read a real NVIDIA GPU through the lab's own code: sampler, Prometheus gauges, dashboards.

Run on a GPU box (no vLLM needed): it loads the GPU with a PyTorch matmul while the
TelemetrySampler reads NVML, starts a TextGen (no model) with its metrics server and scrapes
the GPU series from it, and builds the dashboard frames from the readings. Prints what it read
and, with --out, writes a JSON summary and a PNG of the GPU panels there.

    python scripts/gpu_check.py --out /tmp/gpu-check
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import pandas as pd  # noqa: E402

from textgen import Settings, TextGen  # noqa: E402
from textgen.telemetry import GpuProbe, TelemetrySampler  # noqa: E402


def load_dashboards():  # ui/__init__ imports gradio; the dashboards' data needs only pandas
    spec = importlib.util.spec_from_file_location("dashboards", ROOT / "ui" / "dashboards.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["dashboards"] = module
    spec.loader.exec_module(module)
    return module


def gpu_load(seconds: float) -> None:
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        (a @ a).sum().item()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main(out: Path | None) -> None:
    probe = GpuProbe()
    print("GPU available:", probe.available, "| error:", probe.error)
    sampler = TelemetrySampler(interval=0.5, gpu=probe)
    sampler.sample()
    load = threading.Thread(target=gpu_load, args=(6.0,) if probe.available else (0.0,))
    if probe.available:
        load.start()
    for _ in range(12):
        await asyncio.sleep(0.5)
        sampler.sample()
    if probe.available:
        load.join()
    sampler.sample()
    gpu = sampler.gpu_frame()
    system = sampler.system_frame()
    print(gpu[["time", "gpu", "utilization_percent", "memory_used_bytes", "memory_total_bytes",
               "temperature_celsius", "power_watts"]].to_string())

    port = free_port()
    textgen = TextGen(Settings(MODEL="", VLLM_ENDPOINT="", METRICS_PORT=port,
                               METRICS_HOST="127.0.0.1"))
    await textgen.start()
    await asyncio.sleep(0.2)
    scraped = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    await textgen.close()
    gpu_lines = [line for line in scraped.splitlines() if line.startswith("text_gpu_")]
    print("\n".join(gpu_lines))

    dashboards = load_dashboards()
    now = pd.Timestamp.now()
    board = dashboards.build(system, gpu, pd.DataFrame(columns=["time", "model", "cache", "outcome",
                                                                "seconds", "ttft", "completion_tokens"]),
                             gpu_error=probe.error, now=now, window=300)
    print("dashboard notice:", board.gpu_notice)
    print("dashboard summary:", board.summary)
    for metric, frame in board.gpu.items():
        print(f"dashboard {metric}: {len(frame)} points, max {frame['value'].max():.1f}")

    if out is not None and probe.available:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps({
            "available": probe.available,
            "gpus": sorted(gpu["gpu"].unique().tolist()),
            "max_utilization_percent": float(gpu["utilization_percent"].max()),
            "max_memory_used_gib": float(gpu["memory_used_bytes"].max() / 1024**3),
            "memory_total_gib": float(gpu["memory_total_bytes"].max() / 1024**3),
            "max_temperature_c": float(gpu["temperature_celsius"].max()),
            "max_power_w": float(gpu["power_watts"].max()),
            "prometheus_gpu_lines": gpu_lines,
            "dashboard_summary": board.summary,
            "dashboard_points": {m: len(f) for m, f in board.gpu.items()},
        }, indent=2))
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
        for ax, (metric, frame) in zip(axes, board.gpu.items(), strict=False):
            for name, series in frame.groupby("gpu"):
                ax.plot(series["time"], series["value"], label=name)
            ax.set_title(dashboards.GPU_METRICS[metric][2])
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "gpu_dashboard.png", dpi=80)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    asyncio.run(main(parser.parse_args().out))
