"""Metrics names and labels, GPU gauges from a fake NVML, and the no-GPU case."""

from __future__ import annotations

from prometheus_client import generate_latest

from tests.support.fake_nvml import GIB, FakeNvml, FakeNvmlWithoutDriver
from textgen.metrics import Metrics
from textgen.telemetry import NO_GPU_MESSAGE, GpuProbe, TelemetrySampler


def test_seed_metric_names_exist_with_model_labels() -> None:
    metrics = Metrics()
    metrics.generation_seconds.labels("m").observe(0.5)
    metrics.errors.labels("m", "rate_limit_exceeded").inc()
    metrics.cache_hits.labels("m").inc()
    metrics.cache_misses.labels("m").inc()
    text = generate_latest(metrics.registry).decode()
    for line in (
        'text_generation_seconds_bucket{le="0.5",model="m"} 1.0',
        'text_generation_errors_total{error_type="rate_limit_exceeded",model="m"} 1.0',
        'text_cache_hits_total{model="m"} 1.0',
        'text_cache_misses_total{model="m"} 1.0',
    ):
        assert line in text


def _samples(text: str, name: str) -> dict[str, float]:
    """{label set: value} of one metric in Prometheus' text format."""
    return {line[len(name):].rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(name + "{")}


def test_gpu_gauges_from_fake_nvml_with_two_gpus() -> None:
    nvml = FakeNvml()
    sampler = TelemetrySampler(gpu=GpuProbe(nvml=nvml))
    metrics = Metrics()
    metrics.watch_telemetry(sampler)
    sampler.sample()
    text = generate_latest(metrics.registry).decode()
    assert _samples(text, "text_gpu_memory_used_bytes") == {
        '{gpu="0",name="Fake H100"}': 2 * GIB, '{gpu="1",name="Fake L4"}': 4 * GIB}
    # The second board has no power counter: its series is absent, not zero.
    assert _samples(text, "text_gpu_power_watts") == {'{gpu="0",name="Fake H100"}': 150.0}
    assert "text_process_rss_bytes" in text
    frame = sampler.gpu_frame()
    assert sorted(frame["gpu"].unique()) == ["0: Fake H100", "1: Fake L4"]
    assert sampler.gpu.memory_used_gb() == round(6 * GIB / 1e9, 3)
    sampler.gpu.close()
    assert nvml.shut_down


def test_no_gpu_means_absent_series_and_an_explanation() -> None:
    sampler = TelemetrySampler(gpu=GpuProbe(nvml=FakeNvmlWithoutDriver()))
    metrics = Metrics()
    metrics.watch_telemetry(sampler)
    sampler.sample()
    text = generate_latest(metrics.registry).decode()
    assert "text_gpu_" not in text
    assert "text_system_cpu_percent" in text
    assert not sampler.gpu.available and NO_GPU_MESSAGE in (sampler.gpu.error or "")
    assert sampler.gpu_frame().empty and len(sampler.system_frame()) == 1
    assert sampler.gpu.memory_used_gb() is None


def test_real_probe_on_this_machine_never_raises() -> None:
    probe = GpuProbe()
    readings = probe.read()
    assert probe.available == bool(readings)
    probe.close()
