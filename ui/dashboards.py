"""The dashboards' data: tidy pandas frames for the plots, built from the core's readings.

Pure functions of the telemetry and request frames (and of `now`, so tests pin time): the
Dashboards tab only draws what these return. Every series is in long format (`time`, a series
column, `value`) so one line plot per panel can colour its series.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from textgen.telemetry import NO_GPU_MESSAGE

GIB = 1024**3

# Time windows the dashboards offer, in seconds; each is drawn in about 60 buckets.
WINDOWS: dict[str, int] = {"5 min": 300, "15 min": 900, "30 min": 1800}
DEFAULT_WINDOW = "5 min"
BUCKETS_PER_WINDOW = 60

# GPU panels: column of TelemetrySampler.gpu_frame(), its scale, and the axis title.
GPU_METRICS: dict[str, tuple[str, float, str]] = {
    "utilization": ("utilization_percent", 1.0, "utilisation (%)"),
    "memory": ("memory_used_bytes", 1 / GIB, "memory used (GiB)"),
    "temperature": ("temperature_celsius", 1.0, "temperature (°C)"),
    "power": ("power_watts", 1.0, "power (W)"),
}

LATENCY_PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
# Outcomes that mean the request was served (a stopped generation was served, then cut short).
SERVED = ("ok", "aborted")


def _empty(series: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"time": pd.Series(dtype="datetime64[ns]"), series: pd.Series(dtype=str),
         "value": pd.Series(dtype=float)}
    )


def _since(frame: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    return frame[frame["time"] >= start] if not frame.empty else frame


def bucket_seconds(window_seconds: int) -> int:
    """Width of one bucket for a window: about 60 buckets, never under 2 s (the sample period)."""
    return max(2, window_seconds // BUCKETS_PER_WINDOW)


# --- machine ------------------------------------------------------------------------------


def cpu_series(system: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    """CPU utilisation of the machine (%), one row per sample."""
    frame = _since(system, start)
    if frame.empty:
        return _empty("series")
    return pd.DataFrame(
        {"time": frame["time"], "series": "CPU", "value": frame["cpu_percent"].astype(float)}
    ).reset_index(drop=True)


def memory_series(system: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    """RAM in use on the machine and this process's RSS (GiB), long format."""
    frame = _since(system, start)
    if frame.empty:
        return _empty("series")
    parts = [
        pd.DataFrame({"time": frame["time"], "series": name, "value": frame[column] / GIB})
        for name, column in (("RAM used", "memory_used_bytes"), ("process RSS", "process_rss_bytes"))
    ]
    return pd.concat(parts, ignore_index=True)


def gpu_series(gpu: pd.DataFrame, metric: str, start: pd.Timestamp) -> pd.DataFrame:
    """One GPU metric over time, one series per GPU (`gpu` is "index: name")."""
    column, scale, _ = GPU_METRICS[metric]
    frame = _since(gpu, start)
    if frame.empty:
        return _empty("gpu")
    frame = frame.dropna(subset=[column])  # a counter this GPU does not support
    return pd.DataFrame(
        {"time": frame["time"], "gpu": frame["gpu"].astype(str),
         "value": frame[column].astype(float) * scale}
    ).reset_index(drop=True)


# --- requests -----------------------------------------------------------------------------


def _buckets(requests: pd.DataFrame, start: pd.Timestamp, now: pd.Timestamp,
             width: int) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    """The requests in the window, each with the start of its bucket; and every bucket start."""
    freq = f"{width}s"
    first = start.floor(freq)
    index = pd.date_range(first, now.floor(freq), freq=freq)
    frame = _typed(requests)
    frame = frame[(frame["time"] >= first) & (frame["time"] <= now)].copy()
    frame["bucket"] = frame["time"].dt.floor(freq)
    return frame, index


def _typed(requests: pd.DataFrame) -> pd.DataFrame:
    # An empty history comes as object columns; numbers must be numbers to aggregate.
    return requests.astype({"time": "datetime64[ns]", "seconds": float, "completion_tokens": float})


def request_rate(requests: pd.DataFrame, start: pd.Timestamp, now: pd.Timestamp,
                 width: int) -> pd.DataFrame:
    """Requests per minute, served and refused/failed, with idle buckets at zero."""
    frame, index = _buckets(requests, start, now, width)
    frame["series"] = frame["outcome"].map(lambda o: "served" if o in SERVED else "refused or failed")
    counts = frame.groupby(["bucket", "series"]).size().unstack(fill_value=0)
    counts = counts.reindex(index=index, columns=["served", "refused or failed"], fill_value=0)
    per_minute = counts * (60.0 / width)
    per_minute.index.name = "time"
    long = per_minute.reset_index().melt(id_vars="time", var_name="series", value_name="value")
    return long.astype({"value": float, "series": str})


def latency_percentiles(requests: pd.DataFrame, start: pd.Timestamp, now: pd.Timestamp,
                        width: int) -> pd.DataFrame:
    """p50/p95/p99 of the whole request time (s) of completed requests, per bucket."""
    frame, _ = _buckets(requests, start, now, width)
    frame = frame[frame["outcome"] == "ok"]
    if frame.empty:
        return _empty("series")
    grouped = frame.groupby("bucket")["seconds"]
    parts = [
        pd.DataFrame({"time": q.index, "series": name, "value": q.to_numpy(dtype=float)})
        for name, p in LATENCY_PERCENTILES.items()
        for q in [grouped.quantile(p)]
    ]
    return pd.concat(parts, ignore_index=True)


def token_throughput(requests: pd.DataFrame, start: pd.Timestamp, now: pd.Timestamp,
                     width: int) -> pd.DataFrame:
    """Completion tokens per second, summed over the requests that finished in each bucket."""
    frame, index = _buckets(requests, start, now, width)
    tokens = frame.groupby("bucket")["completion_tokens"].sum().reindex(index, fill_value=0)
    return pd.DataFrame(
        {"time": index, "series": "tokens/s", "value": tokens.to_numpy(dtype=float) / width}
    )


def cache_hit_rate(requests: pd.DataFrame, start: pd.Timestamp, now: pd.Timestamp,
                   width: int) -> pd.DataFrame:
    """Share of cache lookups that hit (%), per bucket that had lookups."""
    frame, _ = _buckets(requests, start, now, width)
    frame = frame[frame["cache"].isin(["HIT", "MISS"])]
    if frame.empty:
        return _empty("series")
    rate = frame.assign(hit=frame["cache"] == "HIT").groupby("bucket")["hit"].mean() * 100.0
    return pd.DataFrame({"time": rate.index, "series": "hit rate", "value": rate.to_numpy(dtype=float)})


# --- all panels ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dashboard:
    """Everything the Dashboards tab draws for one refresh."""

    cpu: pd.DataFrame
    memory: pd.DataFrame
    gpu: dict[str, pd.DataFrame]
    gpu_notice: str | None  # set instead of GPU series when there is no GPU to read
    request_rate: pd.DataFrame
    latency: pd.DataFrame
    throughput: pd.DataFrame
    cache_hit_rate: pd.DataFrame
    summary: dict[str, str] = field(default_factory=dict)


def build(system: pd.DataFrame, gpu: pd.DataFrame, requests: pd.DataFrame, *,
          gpu_error: str | None, now: pd.Timestamp, window: int,
          in_flight: int | None = None) -> Dashboard:
    """Every panel's frame for the `window` seconds up to `now`.

    `gpu_error` is the GPU probe's reason for having no GPU (None when it has one); the GPU
    panels then carry that notice instead of empty axes. `in_flight` is how many requests the
    engines hold right now, for the summary.
    """
    start = now - pd.Timedelta(seconds=window)
    width = bucket_seconds(window)
    gpu_frames = {} if gpu_error else {m: gpu_series(gpu, m, start) for m in GPU_METRICS}
    notice = gpu_error
    if notice is not None and not notice.startswith(NO_GPU_MESSAGE):
        notice = f"{NO_GPU_MESSAGE} ({notice})"  # e.g. "pynvml is not installed"
    return Dashboard(
        cpu=cpu_series(system, start),
        memory=memory_series(system, start),
        gpu=gpu_frames,
        gpu_notice=notice,
        request_rate=request_rate(requests, start, now, width),
        latency=latency_percentiles(requests, start, now, width),
        throughput=token_throughput(requests, start, now, width),
        cache_hit_rate=cache_hit_rate(requests, start, now, width),
        summary=summary(system, gpu, requests, start, now, in_flight=in_flight),
    )


def summary(system: pd.DataFrame, gpu: pd.DataFrame, requests: pd.DataFrame,
            start: pd.Timestamp, now: pd.Timestamp, *, in_flight: int | None = None) -> dict[str, str]:
    """The figures shown above the plots: the latest readings and the window's request totals."""
    figures: dict[str, str] = {}
    if not system.empty:
        last = system.iloc[-1]
        figures["CPU"] = f"{last['cpu_percent']:.0f} %"
        figures["RAM"] = (f"{last['memory_used_bytes'] / GIB:.1f} / "
                          f"{last['memory_total_bytes'] / GIB:.1f} GiB")
        figures["process RSS"] = f"{last['process_rss_bytes'] / GIB:.2f} GiB"
    if not gpu.empty:
        latest = gpu[gpu["time"] == gpu["time"].max()]
        for _, row in latest.iterrows():
            name = f"GPU {row['index']}"
            parts = []
            if pd.notna(row["utilization_percent"]):
                parts.append(f"{row['utilization_percent']:.0f} %")
            if pd.notna(row["memory_used_bytes"]) and pd.notna(row["memory_total_bytes"]):
                parts.append(f"{row['memory_used_bytes'] / GIB:.1f} / "
                             f"{row['memory_total_bytes'] / GIB:.1f} GiB")
            figures[name] = " · ".join(parts) or "no counters"
    requests = _typed(requests)
    window = requests[(requests["time"] >= start) & (requests["time"] <= now)]
    if in_flight is not None:
        figures["in flight"] = str(in_flight)
    figures["requests"] = str(len(window))
    stopped = int((window["outcome"] == "aborted").sum())
    if stopped:
        figures["stopped"] = str(stopped)
    done = window[window["outcome"] == "ok"]
    if not done.empty:
        figures["p50 latency"] = f"{done['seconds'].quantile(0.5):.2f} s"
    lookups = window[window["cache"].isin(["HIT", "MISS"])]
    if not lookups.empty:
        figures["cache hits"] = f"{(lookups['cache'] == 'HIT').mean() * 100:.0f} %"
    return figures
