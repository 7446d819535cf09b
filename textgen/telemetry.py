"""GPU (pynvml) and system (psutil) readings in a ring buffer, read as pandas DataFrames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import pandas as pd
import psutil

log = logging.getLogger(__name__)

NO_GPU_MESSAGE = "no NVIDIA GPU detected"


@dataclass(frozen=True, slots=True)
class GpuReading:
    index: int
    name: str
    utilization_percent: float | None
    memory_used_bytes: float | None
    memory_total_bytes: float | None
    temperature_celsius: float | None
    power_watts: float | None


@dataclass(frozen=True, slots=True)
class SystemReading:
    cpu_percent: float
    memory_used_bytes: float
    memory_total_bytes: float
    process_rss_bytes: float


@dataclass(frozen=True, slots=True)
class Sample:
    timestamp: float
    system: SystemReading
    gpus: tuple[GpuReading, ...]


def _load_nvml() -> ModuleType | None:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


class GpuProbe:
    """Reads every NVIDIA GPU through NVML; `available` is False where there is none."""

    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml = nvml if nvml is not None else _load_nvml()
        self._handles: list[Any] = []
        self.error: str | None = None
        if self._nvml is None:
            self.error = "pynvml is not installed"
            return
        try:
            self._nvml.nvmlInit()
            count = self._nvml.nvmlDeviceGetCount()
            self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.error = f"{NO_GPU_MESSAGE} ({type(exc).__name__})"
            self._handles = []
        if not self._handles and self.error is None:
            self.error = NO_GPU_MESSAGE

    @property
    def available(self) -> bool:
        return bool(self._handles)

    def read(self) -> tuple[GpuReading, ...]:
        return tuple(self._read_one(i, h) for i, h in enumerate(self._handles))

    def _read_one(self, index: int, handle: Any) -> GpuReading:
        nvml = self._nvml
        assert nvml is not None

        def attempt(fn: Any, *args: Any) -> Any:
            # Consumer and datacenter GPUs each lack some counters (NVMLError_NotSupported).
            try:
                return fn(handle, *args)
            except Exception:
                return None

        name = attempt(nvml.nvmlDeviceGetName)
        util = attempt(nvml.nvmlDeviceGetUtilizationRates)
        mem = attempt(nvml.nvmlDeviceGetMemoryInfo)
        temp = attempt(nvml.nvmlDeviceGetTemperature, 0)  # 0 = NVML_TEMPERATURE_GPU
        power_mw = attempt(nvml.nvmlDeviceGetPowerUsage)
        return GpuReading(
            index=index,
            name=name.decode() if isinstance(name, bytes) else str(name or f"GPU {index}"),
            utilization_percent=None if util is None else float(util.gpu),
            memory_used_bytes=None if mem is None else float(mem.used),
            memory_total_bytes=None if mem is None else float(mem.total),
            temperature_celsius=None if temp is None else float(temp),
            power_watts=None if power_mw is None else power_mw / 1000.0,
        )

    def memory_used_gb(self) -> float | None:
        """GPU memory in use on all GPUs, in GB; None without a GPU."""
        if not self._handles:
            return None
        used = [g.memory_used_bytes for g in self.read() if g.memory_used_bytes is not None]
        return round(sum(used) / 1e9, 3) if used else None

    def close(self) -> None:
        if self._handles and self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
        self._handles = []


class TelemetrySampler:
    """Samples the machine on a timer into a bounded ring; the dashboards read DataFrames."""

    def __init__(self, interval: float = 2.0, history: int = 900, gpu: GpuProbe | None = None):
        self.interval = interval
        self.gpu = gpu if gpu is not None else GpuProbe()
        self._ring: deque[Sample] = deque(maxlen=history)
        self._process = psutil.Process(os.getpid())
        self._task: asyncio.Task[None] | None = None
        psutil.cpu_percent(None)  # the first call primes the counter and returns 0

    def sample(self) -> Sample:
        """Read the machine once and keep the reading."""
        vm = psutil.virtual_memory()
        reading = Sample(
            timestamp=time.time(),
            system=SystemReading(
                cpu_percent=psutil.cpu_percent(None),
                memory_used_bytes=float(vm.total - vm.available),
                memory_total_bytes=float(vm.total),
                process_rss_bytes=float(self._process.memory_info().rss),
            ),
            gpus=self.gpu.read(),
        )
        self._ring.append(reading)
        return reading

    def latest(self) -> Sample | None:
        return self._ring[-1] if self._ring else None

    def system_frame(self) -> pd.DataFrame:
        """One row per sample: time, cpu_percent, memory and RSS (GiB)."""
        rows = [{"time": s.timestamp, **asdict(s.system)} for s in self._ring]
        frame = pd.DataFrame(rows, columns=["time", *SystemReading.__dataclass_fields__])
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
        return frame

    def gpu_frame(self) -> pd.DataFrame:
        """One row per sample and GPU (long format); empty without a GPU."""
        rows = [
            {"time": s.timestamp, "gpu": f"{g.index}: {g.name}", **asdict(g)}
            for s in self._ring
            for g in s.gpus
        ]
        frame = pd.DataFrame(rows, columns=["time", "gpu", *GpuReading.__dataclass_fields__])
        frame["time"] = pd.to_datetime(frame["time"], unit="s")
        return frame

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="telemetry")

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.sample)
            except Exception:
                log.exception("telemetry sample failed")
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.gpu.close()
