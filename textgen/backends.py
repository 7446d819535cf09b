"""Remote vLLM backends: their models in the registry, their health, and their recovery.

Discovery runs in the background (an unreachable backend never delays start-up) and again
every REMOTE_DISCOVERY_INTERVAL_SECONDS, sooner while a backend is down. A backend that goes
down turns its models' status to `error` with the reason, and requests for them get a 503 with
`Retry-After` at once instead of waiting on a dead host; when it answers again they are back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from .engines.remote import RemoteEngine, base_url, guess_spec
from .errors import BackendDown, ModelNotFound, TextGenError
from .metrics import Metrics
from .models import ModelRegistry
from .settings import Settings

log = logging.getLogger(__name__)

_DOWN_RETRY_SECONDS = 2.0


def endpoints(settings: Settings) -> list[str]:
    """Base URLs of every configured backend: VLLM_ENDPOINT, then VLLM_ENDPOINTS, deduplicated."""
    urls: list[str] = []
    for endpoint in [settings.VLLM_ENDPOINT, *settings.VLLM_ENDPOINTS]:
        if endpoint and (url := base_url(endpoint)) not in urls:
            urls.append(url)
    return urls


class RemoteBackends:
    """The configured remote backends; `start()` discovers in the background, `close()` stops."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        metrics: Metrics,
        *,
        transport: Any = None,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._interval = settings.REMOTE_DISCOVERY_INTERVAL_SECONDS
        self.engines = [
            RemoteEngine(
                url,
                connect_timeout=settings.REMOTE_CONNECT_TIMEOUT_SECONDS,
                read_timeout=settings.REMOTE_READ_TIMEOUT_SECONDS,
                request_timeout=settings.REMOTE_REQUEST_TIMEOUT_SECONDS,
                max_connections=settings.REMOTE_MAX_CONNECTIONS,
                transport=transport,
            )
            for url in endpoints(settings)
        ]
        for engine in self.engines:
            engine.on_failure = self._on_failure
        self._task: asyncio.Task[None] | None = None
        self._rediscovering: dict[RemoteEngine, asyncio.Task[None]] = {}
        self._discovered = asyncio.Event()

    def start(self) -> None:
        if self.engines and self._task is None:
            self._task = asyncio.create_task(self._watch(), name="remote backend discovery")

    @property
    def discovered(self) -> bool:
        """The first discovery round is done (every backend answered or failed)."""
        return self._discovered.is_set()

    async def wait_discovered(self) -> None:
        """Wait for the first discovery round (every backend answered or failed)."""
        if self.engines:
            await self._discovered.wait()

    async def discover(self) -> None:
        """Ask every backend for its models now, and update the registry with the answers."""
        try:
            await asyncio.gather(*(self._discover(engine) for engine in self.engines))
        finally:
            self._discovered.set()

    async def _watch(self) -> None:
        while True:
            try:
                await self.discover()
            except Exception:  # a bug here must not end discovery (and recovery) for good
                log.exception("remote backend discovery failed")
            down = any(not engine.up for engine in self.engines)
            await asyncio.sleep(
                min(self._interval, _DOWN_RETRY_SECONDS) if down else self._interval
            )

    async def _discover(self, engine: RemoteEngine) -> None:
        was_up, before = engine.up, set(engine.models)
        try:
            models = await engine.list_models()
        except TextGenError as exc:
            if was_up is not False:
                log.warning("remote backend %s is down: %s", engine.url, exc.message)
            engine.up, engine.last_error = False, exc.message
            self._mark_down(engine, exc.message)
            return
        if was_up is not True:
            log.info(
                "remote backend %s is up, serving %s",
                engine.url,
                ", ".join(m["id"] for m in models) or "no models",
            )
        for model in models:
            model_id = model["id"]
            entry = self._registry.entries.get(model_id)
            if entry is not None and entry.engine not in (None, engine):
                continue  # served in-process or by another backend listed before this one
            if entry is not None and entry.loading is not None:
                continue  # being loaded in-process right now
            self._registry.add(guess_spec(model_id, model.get("owned_by")), engine=engine)
        for gone in before - set(engine.models):
            self._registry.detach(gone, engine)

    def _on_failure(self, engine: RemoteEngine, error: TextGenError) -> None:
        self._metrics.backend_errors.labels(engine.url, error.code).inc()
        if isinstance(error, BackendDown):
            # Fail the next requests fast; the watch loop notices when it is back.
            self._mark_down(engine, error.message)
        elif isinstance(error, ModelNotFound) and engine not in self._rediscovering:
            # It no longer serves a model it listed: learn its models now, so the next
            # requests get our own 404 (or another backend) instead of a round trip to it.
            task = asyncio.create_task(self._discover(engine), name=f"rediscover {engine.url}")
            self._rediscovering[engine] = task
            task.add_done_callback(lambda _: self._rediscovering.pop(engine, None))

    def _mark_down(self, engine: RemoteEngine, reason: str) -> None:
        for model_id in engine.models:
            self._registry.mark_down(model_id, engine, reason)

    def health(self) -> dict[str, Any]:
        """For /health: `degraded` while any backend is down, and each backend's state."""
        backends = [
            {
                "url": e.url,
                "status": "unknown" if e.up is None else "up" if e.up else "down",
                "models": list(e.models),
                "error": None if e.up else e.last_error,
            }
            for e in self.engines
        ]
        down = any(e.up is False for e in self.engines)
        return {"status": "degraded" if down else "ok", "backends": backends}

    async def close(self) -> None:
        for task in [self._task, *self._rediscovering.values()]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = None
        for engine in self.engines:
            await engine.close()
