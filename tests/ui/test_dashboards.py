"""The dashboards' frames, from real telemetry samplers (with a fake NVML for the GPUs)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.support.fake_nvml import GIB, FakeNvml, FakeNvmlWithoutDriver
from textgen.telemetry import NO_GPU_MESSAGE, GpuProbe, TelemetrySampler
from ui import dashboards

NOW = pd.Timestamp("2026-11-26 12:00:00")


def _sampler(nvml: object, samples: int = 4) -> TelemetrySampler:
    sampler = TelemetrySampler(gpu=GpuProbe(nvml=nvml))
    for _ in range(samples):
        sampler.sample()
    return sampler


def _requests(rows: list[tuple[float, str, str, float, int]]) -> pd.DataFrame:
    """(seconds before NOW, cache, outcome, seconds taken, completion tokens) per request."""
    frame = pd.DataFrame(
        [{"time": NOW - pd.Timedelta(seconds=ago), "model": "m", "cache": cache,
          "outcome": outcome, "seconds": took, "ttft": 0.1, "completion_tokens": tokens}
         for ago, cache, outcome, took, tokens in rows],
        columns=["time", "model", "cache", "outcome", "seconds", "ttft", "completion_tokens"],
    )
    frame["time"] = pd.to_datetime(frame["time"])
    return frame


def _no_requests() -> pd.DataFrame:
    return _requests([])


def test_two_fake_gpus_give_one_series_per_gpu_for_every_metric() -> None:
    sampler = _sampler(FakeNvml(power_on_second=True))
    system, gpu = sampler.system_frame(), sampler.gpu_frame()
    now = system["time"].max()
    board = dashboards.build(system, gpu, _no_requests(), gpu_error=None, now=now, window=300)

    assert board.gpu_notice is None
    assert set(board.gpu) == set(dashboards.GPU_METRICS)
    for metric, frame in board.gpu.items():
        assert list(frame.columns) == ["time", "gpu", "value"], metric
        assert sorted(frame["gpu"].unique()) == ["0: Fake H100", "1: Fake L4"], metric
        assert len(frame) == 2 * 4, metric
        assert pd.api.types.is_datetime64_any_dtype(frame["time"])
    memory = board.gpu["memory"].groupby("gpu")["value"].first()
    assert memory["0: Fake H100"] == pytest.approx(2.0)  # GiB
    assert memory["1: Fake L4"] == pytest.approx(4.0)
    power = board.gpu["power"].groupby("gpu")["value"].first()
    assert power["0: Fake H100"] == pytest.approx(150.0)  # W, from milliwatts
    assert board.summary["GPU 0"] == f"{gpu['utilization_percent'].iloc[-2]:.0f} % · 2.0 / 80.0 GiB"


def test_a_counter_a_gpu_lacks_leaves_only_that_series_out() -> None:
    sampler = _sampler(FakeNvml())  # the second fake GPU has no power counter
    board = dashboards.build(sampler.system_frame(), sampler.gpu_frame(), _no_requests(),
                             gpu_error=None, now=sampler.system_frame()["time"].max(), window=300)
    assert board.gpu["power"]["gpu"].unique().tolist() == ["0: Fake H100"]
    assert board.gpu["temperature"]["gpu"].nunique() == 2


@pytest.mark.parametrize("nvml", [FakeNvmlWithoutDriver(), FakeNvml(count=0)],
                         ids=["driver-missing", "no-devices"])
def test_without_a_gpu_the_gpu_panels_carry_the_notice_instead_of_series(nvml: object) -> None:
    sampler = _sampler(nvml)
    assert not sampler.gpu.available
    board = dashboards.build(sampler.system_frame(), sampler.gpu_frame(), _no_requests(),
                             gpu_error=sampler.gpu.error, now=sampler.system_frame()["time"].max(),
                             window=300)
    assert board.gpu == {}
    assert board.gpu_notice is not None and board.gpu_notice.startswith(NO_GPU_MESSAGE)
    assert not any(name.startswith("GPU") for name in board.summary)
    # The machine panels do not depend on a GPU.
    assert len(board.cpu) == 4
    assert set(board.memory["series"]) == {"RAM used", "process RSS"}


def test_a_probe_error_that_does_not_say_no_gpu_is_still_shown_as_no_gpu() -> None:
    board = dashboards.build(_sampler(FakeNvml(count=0)).system_frame(), pd.DataFrame(
        columns=["time", "gpu"]), _no_requests(), gpu_error="pynvml is not installed", now=NOW,
        window=300)
    assert board.gpu_notice == f"{NO_GPU_MESSAGE} (pynvml is not installed)"


def test_memory_series_are_in_gib_and_cpu_in_percent() -> None:
    sampler = _sampler(FakeNvml(count=0), samples=3)
    system = sampler.system_frame()
    board = dashboards.build(system, sampler.gpu_frame(), _no_requests(), gpu_error="none",
                             now=system["time"].max(), window=300)
    ram = board.memory[board.memory["series"] == "RAM used"]["value"]
    assert ram.iloc[-1] == pytest.approx(system["memory_used_bytes"].iloc[-1] / GIB)
    assert board.cpu["value"].between(0, 100).all()


def test_samples_older_than_the_window_are_left_out() -> None:
    sampler = _sampler(FakeNvml(), samples=2)
    system, gpu = sampler.system_frame(), sampler.gpu_frame()
    later = system["time"].max() + pd.Timedelta(minutes=10)
    board = dashboards.build(system, gpu, _no_requests(), gpu_error=None, now=later, window=300)
    assert board.cpu.empty and board.memory.empty
    assert all(frame.empty for frame in board.gpu.values())
    wide = dashboards.build(system, gpu, _no_requests(), gpu_error=None, now=later, window=1800)
    assert len(wide.cpu) == 2


def test_request_rate_counts_per_minute_with_idle_buckets_at_zero() -> None:
    requests = _requests([
        (2, "MISS", "ok", 1.0, 10),
        (3, "HIT", "ok", 0.01, 10),
        (4, "BYPASS", "rate_limit_exceeded", 0.0, 0),
        (100, "MISS", "aborted", 2.0, 5),
    ])
    width = dashboards.bucket_seconds(300)
    assert width == 5
    rate = dashboards.request_rate(requests, NOW - pd.Timedelta(seconds=300), NOW, width)
    assert set(rate["series"]) == {"served", "refused or failed"}
    served = rate[rate["series"] == "served"].set_index("time")["value"]
    refused = rate[rate["series"] == "refused or failed"].set_index("time")["value"]
    last = NOW.floor("5s") - pd.Timedelta(seconds=5)  # 2, 3 and 4 s ago fall in this bucket
    assert served[last] == pytest.approx(2 * 60 / 5)
    assert refused[last] == pytest.approx(60 / 5)
    assert served.sum() == pytest.approx(3 * 60 / 5)  # the stopped one counts as served
    assert (served == 0).sum() >= 55  # idle buckets are drawn at zero, not left out
    assert served.index.is_monotonic_increasing


def test_latency_percentiles_use_completed_requests_only() -> None:
    requests = _requests([(1 + i * 0.01, "MISS", "ok", float(i + 1), 1) for i in range(100)]
                         + [(1, "MISS", "generation_failed", 999.0, 0)])
    latency = dashboards.latency_percentiles(requests, NOW - pd.Timedelta(seconds=300), NOW, 5)
    by_series = latency.set_index("series")["value"]
    assert by_series["p50"] == pytest.approx(50.5)
    assert by_series["p95"] == pytest.approx(95.05)
    assert by_series["p99"] == pytest.approx(99.01)


def test_throughput_and_cache_hit_rate() -> None:
    requests = _requests([
        (1, "MISS", "ok", 1.0, 30),
        (2, "HIT", "ok", 0.0, 30),
        (3, "HIT", "ok", 0.0, 30),
        (4, "BYPASS", "ok", 1.0, 10),  # no lookup: not part of the hit rate
    ])
    start = NOW - pd.Timedelta(seconds=300)
    throughput = dashboards.token_throughput(requests, start, NOW, 5)
    assert throughput["value"].max() == pytest.approx(100 / 5)
    assert throughput["value"].sum() == pytest.approx(100 / 5)
    hits = dashboards.cache_hit_rate(requests, start, NOW, 5)
    assert hits["value"].tolist() == [pytest.approx(200 / 3)]


def test_no_requests_give_flat_rate_and_empty_latency() -> None:
    start = NOW - pd.Timedelta(seconds=300)
    rate = dashboards.request_rate(_no_requests(), start, NOW, 5)
    assert not rate.empty and (rate["value"] == 0).all()
    assert dashboards.latency_percentiles(_no_requests(), start, NOW, 5).empty
    assert dashboards.cache_hit_rate(_no_requests(), start, NOW, 5).empty
    board = dashboards.build(pd.DataFrame(columns=["time"]), pd.DataFrame(columns=["time"]),
                             _no_requests(), gpu_error=NO_GPU_MESSAGE, now=NOW, window=300)
    assert board.summary == {"requests": "0"}


def test_summary_gives_the_latest_readings_and_window_totals() -> None:
    sampler = _sampler(FakeNvml(power_on_second=True))
    system, gpu = sampler.system_frame(), sampler.gpu_frame()
    now = system["time"].max() + pd.Timedelta(seconds=5)
    requests = pd.concat([
        _requests([]),
        pd.DataFrame({"time": [now - pd.Timedelta(seconds=1)] * 2, "model": "m",
                      "cache": ["MISS", "HIT"], "outcome": "ok", "seconds": [2.0, 0.0],
                      "ttft": 0.1, "completion_tokens": 8}),
    ], ignore_index=True)
    board = dashboards.build(system, gpu, requests, gpu_error=None, now=now, window=300)
    assert set(board.summary) == {"CPU", "RAM", "process RSS", "GPU 0", "GPU 1", "requests",
                                  "p50 latency", "cache hits"}
    assert board.summary["requests"] == "2"
    assert board.summary["p50 latency"] == "1.00 s"
    assert board.summary["cache hits"] == "50 %"
    assert board.summary["GPU 1"].endswith("4.0 / 24.0 GiB")
