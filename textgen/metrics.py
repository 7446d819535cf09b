"""Prometheus metrics with the seed's names, in a registry of their own per TextGen."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .errors import error_codes

if TYPE_CHECKING:
    from .telemetry import TelemetrySampler

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The service's counters, histograms and gauges; label values are model ids, never text."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # --- the seed's four ---
        self.generation_seconds = Histogram(
            "text_generation_seconds", "Time to generate a response (engine time, cache misses).",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.errors = Counter(
            "text_generation_errors_total", "Failed generation requests.",
            ["model", "error_type"], registry=r,
        )
        self.cache_hits = Counter(
            "text_cache_hits_total", "Responses served from the cache.", ["model"], registry=r
        )
        self.cache_misses = Counter(
            "text_cache_misses_total", "Cache lookups that found nothing.", ["model"], registry=r
        )
        # --- ours ---
        self.prompt_tokens = Counter(
            "text_generation_prompt_tokens_total", "Prompt tokens processed.", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            "text_generation_completion_tokens_total", "Tokens generated.", ["model"], registry=r
        )
        self.time_to_first_token = Histogram(
            "text_generation_time_to_first_token_seconds", "Time until the first generated text.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.in_flight = Gauge(
            "text_generation_requests_in_flight", "Generations running now.", ["model"], registry=r
        )
        self.requests = Counter(
            "text_generation_requests_total", "Generation requests by outcome.",
            ["model", "outcome"], registry=r,
        )
        self.rate_limited = Counter(
            "text_rate_limit_refusals_total", "Requests refused by the per-model limit.",
            ["model"], registry=r,
        )
        self.shared = Counter(
            "text_single_flight_shared_total",
            "Requests answered by an identical request's generation in flight (X-Cache: SHARED).",
            ["model"], registry=r,
        )
        self.cache_errors = Counter(
            "text_cache_errors_total", "Cache store operations that failed (cache bypassed).",
            ["operation"], registry=r,
        )
        self.backend_errors = Counter(
            "text_backend_errors_total", "Failed calls to a remote vLLM backend.",
            ["backend", "error_type"], registry=r,
        )
        self.run_store_writes = Counter(
            "text_run_store_writes_total", "Runs written to the run store's database.", registry=r
        )
        self.run_store_errors = Counter(
            "text_run_store_errors_total",
            "Run store operations that failed (runs are kept in memory and written later).",
            ["operation"], registry=r,
        )
        self.run_store_dropped = Counter(
            "text_run_store_dropped_total",
            "Runs dropped unwritten: the buffer was full while the database was down.", registry=r
        )
        self.run_store_pending = Gauge(
            "text_run_store_pending", "Runs in memory waiting to be written.", registry=r
        )

    def prime(self, model: str) -> None:
        """Create a model's series at 0 once it can be served, so a dashboard or an alert
        reads 0 rather than "no data" until its first request (of each kind)."""
        for family in (self.generation_seconds, self.cache_hits, self.cache_misses,
                       self.prompt_tokens, self.completion_tokens, self.time_to_first_token,
                       self.in_flight, self.rate_limited, self.shared):
            family.labels(model)
        for code in error_codes():
            self.errors.labels(model, code)

    def watch_telemetry(self, sampler: TelemetrySampler) -> None:
        """Expose the sampler's latest GPU and system readings as gauges."""
        self.registry.register(_TelemetryCollector(sampler))

    def serve(self, port: int, addr: str = "0.0.0.0") -> object:
        """Start the metrics HTTP server on its own port; returns the server to close."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server


_GPU_GAUGES = (
    ("utilization_percent", "text_gpu_utilization_percent", "GPU utilisation."),
    ("memory_used_bytes", "text_gpu_memory_used_bytes", "GPU memory in use."),
    ("memory_total_bytes", "text_gpu_memory_total_bytes", "GPU memory in all."),
    ("temperature_celsius", "text_gpu_temperature_celsius", "GPU temperature."),
    ("power_watts", "text_gpu_power_watts", "GPU power draw."),
)
_SYSTEM_GAUGES = (
    ("cpu_percent", "text_system_cpu_percent", "CPU utilisation of the machine."),
    ("memory_used_bytes", "text_system_memory_used_bytes", "Memory in use on the machine."),
    ("memory_total_bytes", "text_system_memory_total_bytes", "Memory of the machine."),
    ("process_rss_bytes", "text_process_rss_bytes", "Resident memory of this process."),
)


class _TelemetryCollector(Collector):
    def __init__(self, sampler: TelemetrySampler) -> None:
        self._sampler = sampler

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sample = self._sampler.latest()
        if sample is None:
            return
        for field, name, doc in _GPU_GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["gpu", "name"])
            for gpu in sample.gpus:
                value = getattr(gpu, field)
                if value is not None:
                    family.add_metric([str(gpu.index), gpu.name], value)
            if sample.gpus:  # no GPU: the series are absent, not zero
                yield family
        for field, name, doc in _SYSTEM_GAUGES:
            yield GaugeMetricFamily(name, doc, value=getattr(sample.system, field))
