"""Stopping without losing a request: drain on SIGTERM, end what is left with an error event.

uvicorn, on SIGTERM, stops listening and waits up to SHUTDOWN_GRACE_SECONDS for the requests
in flight, then cancels them: a stream cut that way just stops, and its client cannot tell a
stop from a finished answer. The lab drains first: readiness fails at once (a load balancer
stops sending), a request that still arrives gets a 503 with Retry-After, and one second
before uvicorn's deadline every request still running is ended by the lab with an error
(`generation_interrupted`), so a stream's last event says why.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn

from textgen import GenerationInterrupted, TextGen

log = logging.getLogger(__name__)

# Time left before uvicorn's deadline to write the error events and close the streams.
_MARGIN_SECONDS = 1.0


class DrainingServer(uvicorn.Server):
    """uvicorn's server, with the lab's drain started by the first stop signal."""

    def __init__(self, config: uvicorn.Config, textgen: TextGen) -> None:
        super().__init__(config)
        self._textgen = textgen
        self._interrupter: asyncio.TimerHandle | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            self._textgen.begin_drain()
            loop = asyncio.get_event_loop()
            grace = self.config.timeout_graceful_shutdown or 0.0
            # A signal handler may run between any two bytecodes: schedule, do not act.
            loop.call_soon_threadsafe(self._arm, loop, max(grace - _MARGIN_SECONDS, 0.0))
        super().handle_exit(sig, frame)

    def _arm(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self._interrupter = loop.call_later(delay, self._interrupt)

    def _interrupt(self) -> None:
        log.info("grace period over: ending the requests still running")
        error = GenerationInterrupted("The lab is stopping; retry on another replica.")
        asyncio.ensure_future(self._textgen.interrupt(error))
