"""A remote server's health as the lab sees it: its state, why, and when to look again.

    unknown  not asked yet
    up       it answered a probe: it takes requests
    ejected  it answered a request with a 5xx or broke a stream
    down     it cannot be reached, or cannot say what it serves

Ejected and down servers take no requests until a probe (their `/v1/models`, asked by
`RemoteBackends` at `retry_at`) brings them back; the wait doubles with each ejection in a row,
up to a ceiling, and starts from the shortest again once the server answers a request. The moves
are made here only: the server, its replica sets and the discovery loop read the state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

State = Literal["unknown", "up", "ejected", "down"]


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """What /v1/models/{id}, /health and the UI show of one replica (a server at one address)."""

    url: str
    status: State
    in_flight: int
    error: str | None
    # From the server's own /metrics, when read (REMOTE_LOAD_METRICS_INTERVAL_SECONDS).
    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None
    prefix_cache_hit_rate: float | None = None


class ServerHealth:
    """The state of one server and its back-off."""

    def __init__(self, *, eject_seconds: float, eject_max_seconds: float) -> None:
        self.state: State = "unknown"
        self.last_error: str | None = None
        self.retry_at = 0.0  # monotonic time of the next probe while ejected or down
        self._ejections = 0  # in a row: the next back-off doubles
        self._eject_seconds = eject_seconds
        self._eject_max = max(eject_max_seconds, eject_seconds)

    def up(self) -> None:
        """It answered a probe: back in rotation."""
        self.state, self.last_error, self.retry_at = "up", None, 0.0

    def down(self, reason: str) -> None:
        """It cannot be reached (or cannot say what it serves): out until a probe passes."""
        self._back_off("down", reason)

    def eject(self, reason: str) -> None:
        """It failed a request (5xx, a broken stream): out for a back-off, then probed."""
        if self.state == "down":
            self.last_error = reason
            return
        self._back_off("ejected", reason)

    def answered(self) -> None:
        """It answered a request: the next ejection starts from the shortest wait."""
        self._ejections = 0

    def note(self, reason: str) -> None:
        """The latest failure, shown as its error even when it moved nothing (a 429: busy)."""
        self.last_error = reason

    def _back_off(self, state: State, reason: str) -> None:
        now = time.monotonic()
        self.last_error = reason
        if self.state == state and now < self.retry_at:
            return  # requests that were in flight failing too: one ejection, not several
        self._ejections += 1
        delay = min(self._eject_seconds * 2 ** (self._ejections - 1), self._eject_max)
        self.state, self.retry_at = state, now + delay
