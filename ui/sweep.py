"""The benchmark tab's arithmetic: the plan of a concurrency sweep and its figures per level.

The figures are the ones `vllm bench serve` reports, computed its way (benchmarks/RESULTS.md
compares the two): a level's duration runs from its first request sent to its last one
finished; output throughput is the output tokens of the completed requests over that duration;
TTFT is per request; ITL is every gap between two streamed chunks after the first; percentiles
are numpy's (linear interpolation).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MAX_LEVELS = 12

COLUMNS = ["concurrency", "requests", "failed", "duration s", "output tok/s", "requests/s",
           "TTFT p50 ms", "TTFT p95 ms", "ITL p50 ms", "ITL p95 ms"]
# The plots: (title, y axis, the table columns drawn as series).
PLOTS = {
    "throughput": ("Output tokens/s", "tokens/s", {"output tok/s": "output"}),
    "requests": ("Requests/s", "requests/s", {"requests/s": "requests"}),
    "ttft": ("Time to first token", "ms", {"TTFT p50 ms": "p50", "TTFT p95 ms": "p95"}),
    "itl": ("Inter-token latency", "ms", {"ITL p50 ms": "p50", "ITL p95 ms": "p95"}),
}


@dataclass(frozen=True, slots=True)
class Measured:
    """One request of a sweep, timed by the client (seconds on a monotonic clock)."""

    started: float
    ended: float
    ttft: float | None = None
    itl: tuple[float, ...] = ()
    output_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def concurrencies(text: str | None, ceiling: int) -> list[int]:
    """"1, 2, 4, 8" as [1, 2, 4, 8]; a readable ValueError for anything else."""
    parts = [p for p in (text or "").replace(";", ",").replace(" ", ",").split(",") if p]
    if not parts:
        raise ValueError("List the concurrencies to try, e.g. 1, 2, 4, 8, 16.")
    levels = []
    for part in parts:
        try:
            level = int(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a whole number of concurrent requests.") from None
        if not 1 <= level <= ceiling:
            raise ValueError(f"Concurrency {level} is outside 1-{ceiling} (one engine holds "
                             f"{ceiling} requests at once: MAX_CONCURRENT_REQUESTS).")
        if level not in levels:
            levels.append(level)
    if len(levels) > MAX_LEVELS:
        raise ValueError(f"At most {MAX_LEVELS} concurrencies per sweep.")
    return sorted(levels)


def plan(levels: list[int], rounds: int) -> list[tuple[int, int]]:
    """(concurrency, requests) per level: `rounds` full batches at each concurrency."""
    return [(level, level * max(1, rounds)) for level in levels]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def level_row(concurrency: int, results: list[Measured]) -> dict[str, Any]:
    """One row of the table: a level's figures (NaN where nothing was measured)."""
    done = [r for r in results if r.ok]
    duration = (max(r.ended for r in results) - min(r.started for r in results)) if results else 0.0
    ttfts = [r.ttft * 1000 for r in done if r.ttft is not None]
    itls = [gap * 1000 for r in done for gap in r.itl]
    tokens = sum(r.output_tokens for r in done)
    return {
        "concurrency": concurrency,
        "requests": len(done),
        "failed": len(results) - len(done),
        "duration s": round(duration, 3),
        "output tok/s": round(tokens / duration, 2) if duration > 0 else float("nan"),
        "requests/s": round(len(done) / duration, 3) if duration > 0 else float("nan"),
        "TTFT p50 ms": round(_percentile(ttfts, 50), 1),
        "TTFT p95 ms": round(_percentile(ttfts, 95), 1),
        "ITL p50 ms": round(_percentile(itls, 50), 1),
        "ITL p95 ms": round(_percentile(itls, 95), 1),
    }


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


def plot_frame(rows: list[dict[str, Any]], plot: str) -> pd.DataFrame:
    """One plot's points in long format (concurrency, series, value), levels measured so far."""
    _, _, series = PLOTS[plot]
    points = [{"concurrency": row["concurrency"], "series": name, "value": float(row[column])}
              for row in rows for column, name in series.items()
              if row["requests"] and not np.isnan(row[column])]
    return pd.DataFrame(points, columns=["concurrency", "series", "value"])


def csv_text(rows: list[dict[str, Any]], about: dict[str, str]) -> str:
    """The table as CSV, each row also saying what it ran on (model, dtype, device, ...)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*COLUMNS, *about], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, **about})
    return out.getvalue()
