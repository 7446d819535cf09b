"""Admission to one model: the requests running on it, and when it was last used."""

from __future__ import annotations

import asyncio
import time

from ..errors import EngineOverloaded


class Admission:
    """Requests admitted to a model and not finished yet (streams included).

    The pipeline takes and gives back slots; an unload drains by waiting for none to be left;
    the eviction picks idle models first, then the least recently used.
    """

    __slots__ = ("_model_id", "_active", "_idle", "_last_used")

    def __init__(self, model_id: str) -> None:
        self._model_id = model_id
        self._active = 0
        self._last_used = 0.0
        # Set while no request runs, so a drain waits on it instead of polling the count.
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def active(self) -> int:
        """Requests running on the model now."""
        return self._active

    @property
    def last_used(self) -> float:
        """`time.monotonic()` of the model's last use: a request began or ended, or it loaded."""
        return self._last_used

    def admit(self, limit: int) -> None:
        """Take a slot, or raise EngineOverloaded when `limit` requests already run."""
        if self._active >= limit:
            raise EngineOverloaded(
                f"The engine for '{self._model_id}' is at capacity ({limit} requests); "
                "retry shortly."
            )
        self._active += 1
        self._idle.clear()

    def release(self) -> None:
        """Give a slot back; a request's end counts as a use of the model."""
        self._active -= 1
        self.touch()
        if self._active == 0:
            self._idle.set()

    def touch(self) -> None:
        """The model was used now (for the least-recently-used eviction)."""
        self._last_used = time.monotonic()

    async def wait_idle(self, seconds: float) -> bool:
        """Wait (bounded) until no request runs on the model; False when some still do."""
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            return False
        return True
