"""The engine panel's data: vLLM's own readings of each engine over time, as plot frames.

`EngineHistory` keeps the readings `TextGen.engine_stats()` returns (one ring per engine, shared
by every page of the lab); the frame functions are pure, in the dashboards' long format
(`time`, `series`, `value`), so one line plot per panel colours its engines.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

import pandas as pd

from textgen.engine_stats import EngineReading, rates

MIN_SPACING_SECONDS = 1.0  # several pages ticking at once add one reading, not several
HISTORY = 900


def engine_name(reading: EngineReading) -> str:
    """How a panel names an engine: the model, and where a remote one runs."""
    model = reading.model.rsplit("/", 1)[-1]
    return model if reading.source == "in-process" else f"{model} @ {reading.source}"


class EngineHistory:
    """Readings per engine, oldest first, in bounded rings."""

    def __init__(self, size: int = HISTORY) -> None:
        self._size = size
        self._rings: dict[tuple[str, str], deque[EngineReading]] = {}
        self.last_read = 0.0

    def due(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) - self.last_read >= MIN_SPACING_SECONDS

    def add(self, readings: Iterable[EngineReading]) -> None:
        for reading in readings:
            key = (reading.source, reading.model)
            self._rings.setdefault(key, deque(maxlen=self._size)).append(reading)
            self.last_read = max(self.last_read, reading.time)

    def engines(self) -> dict[str, list[EngineReading]]:
        return {engine_name(ring[-1]): list(ring) for ring in self._rings.values() if ring}


def _long(rows: list[tuple[float, str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["time", "series", "value"])
    frame["time"] = pd.to_datetime(frame["time"], unit="s")
    return frame.astype({"series": str, "value": float})


def _since(readings: list[EngineReading], start: float) -> list[EngineReading]:
    return [r for r in readings if r.time >= start and r.error is None]


def requests_frame(engines: dict[str, list[EngineReading]], start: float) -> pd.DataFrame:
    """Requests running and waiting in each engine."""
    return _long([(r.time, f"{name} · {kind}", getattr(r, kind))
                  for name, readings in engines.items() for r in _since(readings, start)
                  for kind in ("running", "waiting")])


def kv_cache_frame(engines: dict[str, list[EngineReading]], start: float) -> pd.DataFrame:
    """Share of each engine's KV cache in use (%)."""
    return _long([(r.time, name, r.kv_cache_usage * 100)
                  for name, readings in engines.items() for r in _since(readings, start)])


def _intervals(readings: list[EngineReading], start: float):  # type: ignore[no-untyped-def]
    kept = _since(readings, start)
    return [(after, rates(before, after)) for before, after in zip(kept, kept[1:], strict=False)]


def prefix_hit_frame(engines: dict[str, list[EngineReading]], start: float) -> pd.DataFrame:
    """Share of prompt tokens found in the prefix cache (%), per interval that looked any up."""
    return _long([(after.time, name, rate.prefix_cache_hit_rate * 100)
                  for name, readings in engines.items()
                  for after, rate in _intervals(readings, start)
                  if rate.prefix_cache_hit_rate is not None])


def latency_frame(engines: dict[str, list[EngineReading]], start: float) -> pd.DataFrame:
    """Mean time to first token and time per output token (ms) of each interval's requests."""
    rows = []
    for name, readings in engines.items():
        for after, rate in _intervals(readings, start):
            if rate.ttft is not None:
                rows.append((after.time, f"{name} · TTFT", rate.ttft * 1000))
            if rate.tpot is not None:
                rows.append((after.time, f"{name} · TPOT", rate.tpot * 1000))
    return _long(rows)


def summary(engines: dict[str, list[EngineReading]]) -> dict[str, str]:
    """The latest figures of each engine, for the chips above the plots.

    Hit rate, TTFT and TPOT are since the engine started (vLLM's counters are cumulative);
    the plots show them per interval.
    """
    figures: dict[str, str] = {}
    for name, readings in engines.items():
        last = readings[-1]
        if last.error is not None:
            figures[name] = last.error
            continue
        figures[f"{name} · running"] = f"{last.running:.0f}"
        figures[f"{name} · waiting"] = f"{last.waiting:.0f}"
        figures[f"{name} · KV cache"] = _percent(last.kv_cache_usage)
        if last.prefix_cache_queries:
            figures[f"{name} · prefix-cache hits"] = _percent(
                last.prefix_cache_hits / last.prefix_cache_queries)
        if last.ttft_count:
            figures[f"{name} · TTFT"] = f"{last.ttft_sum / last.ttft_count * 1000:.0f} ms"
        if last.tpot_count:
            figures[f"{name} · TPOT"] = f"{last.tpot_sum / last.tpot_count * 1000:.1f} ms"
    return figures


def _percent(share: float) -> str:
    # A small model's one request fills a sliver of a CPU's KV cache: keep it visibly non-zero.
    value = share * 100
    return f"{value:.0f} %" if value >= 10 or value == 0 else f"{value:.2f} %"
