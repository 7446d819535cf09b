"""FakeNvml: a stand-in for pynvml with two GPUs, since this machine has no NVIDIA GPU."""

from __future__ import annotations

from types import SimpleNamespace


class NVMLError_NotSupported(Exception):  # noqa: N801 - pynvml's own spelling
    pass


class FakeNvml:
    """Answers the NVML calls GpuProbe makes; GPU 1 lacks a power reading, like some boards."""

    def __init__(self, count: int = 2) -> None:
        self.count = count
        self.initialised = False
        self.shut_down = False
        self.tick = 0

    def nvmlInit(self) -> None:  # noqa: N802
        self.initialised = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shut_down = True

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:  # noqa: N802
        return f"Fake H100 #{handle}".encode()

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:  # noqa: N802
        self.tick += 1
        return SimpleNamespace(gpu=10 * (handle + 1) + self.tick % 5, memory=5)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:  # noqa: N802
        total = 80 * 1024**3
        return SimpleNamespace(total=total, used=(handle + 1) * 8 * 1024**3, free=total)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:  # noqa: N802
        return 40 + handle

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:  # noqa: N802
        if handle == 1:
            raise NVMLError_NotSupported()
        return 250_000  # milliwatts


class MissingNvml(FakeNvml):
    """NVML without a driver: nvmlInit fails as on a machine with no NVIDIA GPU."""

    def nvmlInit(self) -> None:  # noqa: N802
        raise RuntimeError("NVML Shared Library Not Found")
