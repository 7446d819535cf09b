"""vLLM's own view of its engines: requests running and waiting, KV-cache usage, prefix-cache
hits, time to first token and time per output token.

Both kinds of engine are read the same way, from vLLM's Prometheus metrics:

- an in-process engine keeps vLLM's own Prometheus stat logger (the one `vllm serve` runs) in a
  registry of its own. vLLM registers it in prometheus_client's global registry, and each new
  engine's logger unregisters every `vllm:` metric there first, so with two models loaded the
  first one's numbers would vanish; `stat_logger(registry)` moves them out as they are made;
- a remote vLLM server is read from its `/metrics` page, by `RemoteServer.read_metrics` over the
  server's own connection pool and parsed here (`parse_metrics`); the same reader gives
  load-aware routing its signal (engines/load.py).

The counters and histograms are cumulative, as Prometheus keeps them; `rates` turns two
readings of one engine into the figures of the time between them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

# vLLM's metric family names (vllm/v1/metrics/loggers.py), read into `EngineReading` fields.
GAUGES = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
}
COUNTERS = {
    "vllm:prefix_cache_queries": "prefix_cache_queries",
    "vllm:prefix_cache_hits": "prefix_cache_hits",
    "vllm:generation_tokens": "generation_tokens",
    "vllm:request_success": "requests_finished",
}
HISTOGRAMS = {
    "vllm:time_to_first_token_seconds": "ttft",
    "vllm:request_time_per_output_token_seconds": "tpot",
}
REMOTE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class EngineReading:
    """One engine's vLLM metrics at one moment; counters and histogram sums are cumulative."""

    model: str
    source: str  # "in-process", or the remote server's base URL
    time: float
    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.0  # share of the KV cache in use, 0..1
    prefix_cache_queries: float = 0.0  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: float = 0.0
    generation_tokens: float = 0.0
    requests_finished: float = 0.0
    ttft_sum: float = 0.0
    ttft_count: float = 0.0
    tpot_sum: float = 0.0
    tpot_count: float = 0.0
    error: str | None = None  # why a remote server could not be read


@dataclass(frozen=True, slots=True)
class EngineRates:
    """What happened between two readings of one engine (None where nothing was measured)."""

    prefix_cache_hit_rate: float | None  # share of looked-up prompt tokens found cached
    ttft: float | None  # mean seconds to first token of the requests that started
    tpot: float | None  # mean seconds per output token of the requests that finished
    tokens_per_second: float


def readings(families: Iterable[Any], source: str, now: float | None = None) -> list[EngineReading]:
    """One reading per served model in a set of Prometheus metric families.

    The families come from `registry.collect()` or from parsing a `/metrics` page; vLLM labels
    each sample with `model_name` and `engine` (the data-parallel rank), summed here.
    """
    now = time.time() if now is None else now
    values: dict[str, dict[str, float]] = {}
    kv_shares: dict[str, list[float]] = {}
    for family in families:
        name = family.name.removesuffix("_total")
        field = GAUGES.get(name) or COUNTERS.get(name) or HISTOGRAMS.get(name)
        if field is None:
            continue
        for sample in family.samples:
            model = sample.labels.get("model_name", "")
            row = values.setdefault(model, {})
            if name in HISTOGRAMS:
                suffix = sample.name.rsplit("_", 1)[-1]
                if suffix in ("sum", "count"):
                    row[f"{field}_{suffix}"] = row.get(f"{field}_{suffix}", 0.0) + sample.value
            elif sample.name.endswith("_created"):
                continue
            elif field == "kv_cache_usage":
                # A share of each engine's own cache: averaged over engines, not summed.
                kv_shares.setdefault(model, []).append(sample.value)
            else:
                row[field] = row.get(field, 0.0) + sample.value
    for model, shares in kv_shares.items():
        values[model]["kv_cache_usage"] = sum(shares) / len(shares)
    return [EngineReading(model=model, source=source, time=now, **fields)
            for model, fields in sorted(values.items())]


def rates(before: EngineReading, after: EngineReading) -> EngineRates:
    """The figures of the interval between two readings of the same engine.

    A counter that went down means the engine restarted (a model reloaded, a server restarted)
    between the readings: as Prometheus' `rate()` does, its new value is what happened since.
    """

    def delta(name: str) -> float:
        now, then = getattr(after, name), getattr(before, name)
        return now - then if now >= then else now

    def mean(total: str, count: str) -> float | None:
        n = delta(count)
        return delta(total) / n if n > 0 else None

    queries, hits = delta("prefix_cache_queries"), delta("prefix_cache_hits")
    seconds, tokens = after.time - before.time, delta("generation_tokens")
    return EngineRates(
        prefix_cache_hit_rate=hits / queries if queries > 0 else None,
        ttft=mean("ttft_sum", "ttft_count"),
        tpot=mean("tpot_sum", "tpot_count"),
        tokens_per_second=tokens / seconds if seconds > 0 and tokens > 0 else 0.0,
    )


# --- in-process engines -------------------------------------------------------------------

# vLLM builds its metrics while an engine starts (in a worker thread) and the next engine's
# logger clears the global registry's `vllm:` metrics: one engine at a time moves its own.
_ADOPTING = threading.Lock()


def adopt(registry: CollectorRegistry, make: Callable[[], None]) -> None:
    """Run `make`, then move every collector it registered in the global registry to `registry`."""
    from prometheus_client import REGISTRY

    with _ADOPTING:
        before = set(REGISTRY._collector_to_names)
        make()
        for collector in set(REGISTRY._collector_to_names) - before:
            REGISTRY.unregister(collector)
            registry.register(collector)


def stat_logger(registry: CollectorRegistry) -> Any:
    """A vLLM stat logger class (for `AsyncLLM(stat_loggers=[...])`) that records vLLM's own
    Prometheus metrics of one engine into `registry` instead of the global one.

    Passing a Prometheus logger also stops vLLM from adding its default one (one logger per
    engine, as `vllm serve` has), and with `disable_log_stats` vLLM adds no periodic log lines.
    """
    from vllm.v1.metrics.loggers import PrometheusStatLogger

    class OwnRegistryStatLogger(PrometheusStatLogger):  # type: ignore[misc]
        def __init__(self, vllm_config: Any, engine_indexes: list[int] | None = None) -> None:
            adopt(registry, lambda: super(OwnRegistryStatLogger, self).__init__(vllm_config,
                                                                                engine_indexes))

        def log_engine_initialized(self) -> None:
            adopt(registry, super().log_engine_initialized)  # it makes the cache-config gauge

    return OwnRegistryStatLogger


def local_readings(registry: CollectorRegistry, now: float | None = None) -> list[EngineReading]:
    return readings(registry.collect(), "in-process", now)


# --- remote servers -----------------------------------------------------------------------

# The families read from a page (names without `_total`, so both the family and its samples
# match): the start of each of their lines, `# HELP name`, `# TYPE name` and samples alike.
_READ = (*GAUGES, *COUNTERS, *HISTOGRAMS)


def parse_metrics(content: bytes) -> list[Metric]:
    """The families of a Prometheus text page that are read here (`readings`, and the routing
    load of engines/load.py), parsed by prometheus_client; ValueError if it is not Prometheus text.

    Only those families' lines reach the parser, and no histogram buckets (only sums and counts
    are read): the parser is pure Python, and a vLLM page of 460 lines took 8 ms to parse whole
    against 0.6 ms filtered (the hand parser routing had before: 0.16 ms), on the event loop,
    for each server at every load reading.
    """
    kept = []
    for line in content.decode("utf-8", "replace").splitlines():
        name = line[7:] if line.startswith(("# HELP ", "# TYPE ")) else line
        if name.startswith(_READ) and not _sample_name(name).endswith("_bucket"):
            kept.append(line)
    kept.append("")
    return list(text_string_to_metric_families("\n".join(kept)))


def _sample_name(line: str) -> str:
    return line.partition("{")[0].partition(" ")[0]


async def remote_readings(server: Any) -> list[EngineReading]:
    """A remote vLLM server's readings from its `/metrics`; on failure, one reading per model
    it serves that says why (so a panel shows the server as unreadable, not as idle).

    The page is read as the lab's requests reach the server (`RemoteServer.read_metrics`): at
    the address its name resolved to, with its `Host`, credentials, TLS settings and proxy,
    over its pooled connections; shown by its URL without credentials.
    """
    now = time.time()
    try:
        families = await server.read_metrics(REMOTE_TIMEOUT_SECONDS)
    except (httpx.HTTPError, ValueError) as exc:
        reason = f"/metrics unreadable ({type(exc).__name__})"
        return [EngineReading(model=m, source=server.url, time=now, error=reason)
                for m in server.models]
    return readings(families, server.url, now)


async def read_all(entries: Iterable[Any], servers: Iterable[Any]) -> list[EngineReading]:
    """Readings of every loaded in-process engine and every remote server that serves models.

    `entries` are the registry's model entries (an in-process engine carries `vllm_metrics`);
    `servers` the remote servers (`RemoteServer`s: `url`, `models`, `read_metrics`).
    """
    now = time.time()
    found: list[EngineReading] = []
    for entry in entries:
        registry = getattr(entry.engine, "vllm_metrics", None)
        if registry is not None:
            found += local_readings(registry, now)
    remote = [server for server in servers if server.models]
    for batch in await asyncio.gather(*(remote_readings(server) for server in remote)):
        found += batch
    return found
