"""A vLLM server's own view of its load, read from its Prometheus `/metrics`.

The lab counts its own requests in flight on each server; other API replicas in front of the
same servers send theirs too. vLLM's gauges (`vllm:num_requests_running`, `..._waiting`,
`vllm:kv_cache_usage_perc`) see everyone's, so what they show beyond our own share at the time
of reading is the others' load, added to ours when choosing a replica.

The page is read and parsed by the same reader as the engine panel's (`RemoteServer.read_metrics`,
`engine_stats.parse_metrics`); this module only sums what routing and /health need of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric

from ..engine_stats import COUNTERS, GAUGES


@dataclass(frozen=True, slots=True)
class ServerLoad:
    """One reading of a server's metrics (None: not read, or the server does not export it)."""

    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None
    prefix_cache_hits: float | None = None
    prefix_cache_queries: float | None = None
    ours: int = 0  # our own requests in flight on it when it was read
    read_at: float = 0.0

    def foreign(self) -> int:
        """Requests of other clients on the server when it was read."""
        if self.running is None and self.waiting is None:
            return 0
        return max(0, round((self.running or 0) + (self.waiting or 0)) - self.ours)

    def prefix_cache_hit_rate(self) -> float | None:
        if not self.prefix_cache_queries or self.prefix_cache_hits is None:
            return None
        return round(self.prefix_cache_hits / self.prefix_cache_queries, 4)


# vLLM's family names for the fields above, from the panel's table (one list of names to keep
# in step with vLLM).
_FIELDS = {name: field for name, field in {**GAUGES, **COUNTERS}.items()
           if field in ServerLoad.__dataclass_fields__}


def server_load(families: Iterable[Metric], *, ours: int = 0, read_at: float = 0.0) -> ServerLoad:
    """The load gauges and prefix-cache counters of a parsed page, summed over their label sets
    (models and data-parallel engines); the KV cache's usage, a share of each engine's cache,
    averaged over them, as the engine panel shows it (a sum could pass 100%)."""
    values: dict[str, float] = {}
    shares: list[float] = []
    for family in families:
        field = _FIELDS.get(family.name.removesuffix("_total"))
        if field is None:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            if field == "kv_cache_usage":
                shares.append(sample.value)
            else:
                values[field] = values.get(field, 0.0) + sample.value
    if shares:
        values["kv_cache_usage"] = sum(shares) / len(shares)
    return ServerLoad(**values, ours=ours, read_at=read_at)
