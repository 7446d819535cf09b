"""A vLLM server's own view of its load, read from its Prometheus `/metrics`.

The lab counts its own requests in flight on each server; other API replicas in front of the
same servers send theirs too. vLLM's gauges (`vllm:num_requests_running`, `..._waiting`,
`vllm:kv_cache_usage_perc`) see everyone's, so what they show beyond our own share at the time
of reading is the others' load, added to ours when choosing a replica.
"""

from __future__ import annotations

from dataclasses import dataclass

_NAMES = {
    b"vllm:num_requests_waiting": "waiting",
    b"vllm:num_requests_running": "running",
    b"vllm:kv_cache_usage_perc": "kv_cache_usage",
    b"vllm:prefix_cache_hits_total": "prefix_hits",
    b"vllm:prefix_cache_queries_total": "prefix_queries",
}


@dataclass(frozen=True, slots=True)
class ServerLoad:
    """One reading of a server's metrics (None: not read, or the server does not export it)."""

    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None
    prefix_hits: float | None = None
    prefix_queries: float | None = None
    ours: int = 0  # our own requests in flight on it when it was read
    read_at: float = 0.0

    def foreign(self) -> int:
        """Requests of other clients on the server when it was read."""
        if self.running is None and self.waiting is None:
            return 0
        return max(0, round((self.running or 0) + (self.waiting or 0)) - self.ours)

    def prefix_cache_hit_rate(self) -> float | None:
        if not self.prefix_queries or self.prefix_hits is None:
            return None
        return round(self.prefix_hits / self.prefix_queries, 4)


def parse_load(text: bytes, *, ours: int = 0, read_at: float = 0.0) -> ServerLoad:
    """The load gauges of a Prometheus text exposition, summed over their label sets."""
    values: dict[str, float] = {}
    for line in text.split(b"\n"):
        if not line.startswith(b"vllm:"):
            continue
        name_end = line.find(b"{")
        if name_end < 0:
            name_end = line.find(b" ")
        field = _NAMES.get(line[:name_end])
        if field is None:
            continue
        try:
            value = float(line.rsplit(b" ", 1)[1])
        except (IndexError, ValueError):
            continue
        values[field] = values.get(field, 0.0) + value
    return ServerLoad(**values, ours=ours, read_at=read_at)
