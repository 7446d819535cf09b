"""FakeNvml: a stand-in for pynvml with two GPUs, because no NVIDIA GPU is on the test machine.

It answers the NVML calls `textgen.telemetry.GpuProbe` makes, with readings that move on every
call, and lets a test make one GPU lack a counter (NVMLError_NotSupported on real hardware).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


class FakeNvmlNotSupported(Exception):
    """Raised for counters a fake GPU does not have, as pynvml raises NVMLError_NotSupported."""


@dataclass
class _Utilization:
    gpu: int
    memory: int


@dataclass
class _Memory:
    total: int
    used: int
    free: int


class FakeNvml:
    """Two fake GPUs: "Fake H100" (80 GiB) and "Fake L4" (24 GiB, no power counter by default)."""

    def __init__(self, *, count: int = 2, power_on_second: bool = False) -> None:
        self.names = [b"Fake H100", b"Fake L4"][:count]
        self.totals = [80 * GIB, 24 * GIB][:count]
        self.power_on_second = power_on_second
        self.calls = 0
        self.initialised = False
        self.shut_down = False

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return self.names[handle]

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> _Utilization:
        self.calls += 1
        return _Utilization(gpu=(10 * (handle + 1) + self.calls) % 100, memory=5)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Memory:
        used = (handle + 1) * 2 * GIB
        return _Memory(total=self.totals[handle], used=used, free=self.totals[handle] - used)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 40 + 5 * handle

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if handle == 1 and not self.power_on_second:
            raise FakeNvmlNotSupported("power")
        return 150_000 + 1000 * handle  # milliwatts


class FakeNvmlWithoutDriver:
    """NVML installed but no driver: nvmlInit fails, as NVMLError_DriverNotLoaded does."""

    def nvmlInit(self) -> None:
        raise FakeNvmlNotSupported("driver not loaded")
