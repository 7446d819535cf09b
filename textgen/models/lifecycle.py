"""In-process engines' lifecycle: load, unload, evict (least recently used), drain, close.

One load or unload runs at a time (a lock): an engine start takes the whole GPU's attention,
and an eviction must finish before the model that needs its room starts. Every status change
goes through the model's entry (textgen/models/states.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..engines import Engine
from ..errors import (
    BackendDown,
    GenerationInterrupted,
    InvalidRequest,
    ModelLoadFailed,
    ModelNotReady,
    ModelUnavailable,
    TextGenError,
)
from .registry import ModelInfo, ModelRegistry
from .states import ModelEntry, ModelState

log = logging.getLogger(__name__)

EngineStarter = Callable[[str, Path], Awaitable[Engine]]
EngineCheck = Callable[[str, Path], Awaitable[None]]
# How long requests interrupted by an unload get to end before their engine stops anyway.
_INTERRUPTED_SECONDS = 5.0


async def _no_check(model_id: str, folder: Path) -> None:
    return None


class EngineLifecycle:
    """Loads in-process engines on demand (at most `max_loaded`) and stops them."""

    def __init__(
        self,
        models: ModelRegistry,
        *,
        start_engine: EngineStarter,
        check_engine: EngineCheck | None = None,
        max_loaded: int,
        drain_seconds: float = 10.0,
        gpu_memory_used_gb: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._models = models
        self._start_engine = start_engine
        self._check_engine = check_engine or _no_check
        self._max_loaded = max_loaded
        self._drain_seconds = drain_seconds
        self._gpu_used = gpu_memory_used_gb
        # Loads in progress (cancelled on close) and engines being stopped (awaited on close).
        self._loads: set[asyncio.Task[None]] = set()
        self._stops: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    # --- load -----------------------------------------------------------------------------

    async def load(self, model_id: str) -> ModelInfo:
        """Load a model in-process (waits for a load already running); unloads the LRU past the limit."""
        e = self._models.entry(model_id)
        if e.status is ModelState.LOADED:
            return self._models.info(model_id)
        if e.engine is not None:  # a remote backend that is down: nothing to load here
            raise BackendDown(f"The model '{model_id}' is unavailable: {e.reason}.")
        if e.status is ModelState.UNAVAILABLE:
            raise ModelUnavailable(f"The model '{model_id}' cannot run here: {e.reason}.", param="model")
        task = e.loading
        if task is None:
            task = self._own(asyncio.create_task(self._load(e), name=f"load {model_id}"))
            e.track_load(task)
        await asyncio.shield(task)
        return self._models.info(model_id)

    async def _load(self, e: ModelEntry) -> None:
        try:
            async with self._lock:
                e.move_to(ModelState.LOADING)
                engine, memory = await self._bring_up(e)
                e.serve(engine, gpu_memory_gb=memory)
                log.info("model %s loaded", e.spec.id)
        finally:
            e.track_load(None)

    async def _bring_up(self, e: ModelEntry) -> tuple[Engine, float | None]:
        """Start the model's engine (making room first): the engine and the GPU memory it took.
        A failure leaves the model `error` with the reason; a cancellation, at rest."""
        model_id = e.spec.id
        try:
            folder = await self._models.folder(model_id)
            # What a start would refuse (a folder that cannot load, bad flags) is found
            # before anything is evicted: the loaded model stays when this one cannot come.
            await self._check_engine(model_id, folder)
            _freeze_libraries()
            await self._make_room(model_id)
            before = self._gpu_used()
            engine = await self._start(model_id, folder)
            after = self._gpu_used()
        except asyncio.CancelledError:
            e.move_to(*self._models.resting(model_id))
            raise
        except Exception as exc:
            reason = (exc.message if isinstance(exc, TextGenError)
                      else str(exc)[:300] if isinstance(exc, ValueError)  # bad folder or flags
                      else type(exc).__name__)
            log.exception("loading %s failed", model_id)
            e.move_to(ModelState.ERROR, reason)
            if isinstance(exc, TextGenError):
                raise
            raise ModelLoadFailed(
                f"The model '{model_id}' could not be loaded: {reason}") from exc
        return engine, None if after is None else round(max(after - (before or 0), 0), 3)

    async def _start(self, model_id: str, folder: Path) -> Engine:
        # An engine start runs in a thread that cannot be stopped half-way: when the load is
        # cancelled (the lab stops), the engine that comes up anyway is stopped, not leaked.
        start = asyncio.ensure_future(self._start_engine(model_id, folder))
        try:
            return await asyncio.shield(start)
        except asyncio.CancelledError:
            self._stops.add(asyncio.create_task(_stop_when_started(start), name=f"stop {model_id}"))
            raise

    async def _make_room(self, coming: str) -> None:
        local = [e for e in self._models.loaded() if e.engine is not None and e.engine.kind == "vllm"]
        while len(local) >= self._max_loaded > 0:
            # Idle models first, then the least recently used (a request's end counts as a use).
            victim = min(local, key=lambda x: (x.active > 0, x.last_used))
            log.info("unloading %s (least recently used) to load %s within %d models",
                     victim.spec.id, coming, self._max_loaded)
            await self._unload(victim, f"unloaded to make room for '{coming}'")
            local.remove(victim)

    # --- unload ---------------------------------------------------------------------------

    async def unload(self, model_id: str) -> ModelInfo:
        e = self._models.entry(model_id)
        if e.loading is not None:
            raise ModelNotReady(f"The model '{model_id}' is loading; unload it when it is loaded.")
        if e.engine is not None and e.engine.kind != "vllm":
            raise InvalidRequest(
                f"The model '{model_id}' is served by a remote backend; it cannot be unloaded "
                "here.", param="model",
            )
        async with self._lock:
            await self._unload(e, "unloaded on request")
        return self._models.info(model_id)

    async def _unload(self, e: ModelEntry, why: str) -> None:
        """Stop admitting to the model, let its requests finish (bounded), end the rest with
        an error, then stop its engine."""
        engine = e.engine
        if engine is None or engine.kind != "vllm":
            return
        e.move_to(ModelState.UNLOADING, why)
        if not await e.admission.wait_idle(self._drain_seconds):
            log.warning("%s: ending %d request(s) still running after %.0f s", e.spec.id,
                        e.active, self._drain_seconds)
            await engine.interrupt(GenerationInterrupted(
                f"The model '{e.spec.id}' was {why} while this request was running; retry."))
            await e.admission.wait_idle(_INTERRUPTED_SECONDS)
        if e.engine is engine:  # else the lab's close took it meanwhile
            e.drop_engine(*self._models.resting(e.spec.id))
        await engine.close()
        del engine
        _collect_stopped_engine()

    # --- engines that die, and the lab's end ----------------------------------------------

    def check_engines(self) -> None:
        """Mark an in-process model whose engine died as `error`, and stop that engine.

        vLLM's engine core can die (a crash, the OOM killer); every request to it fails from
        then on, so it must not look `loaded` to /health, the readiness probe or the UI.
        """
        for e in self._models.entries.values():
            engine = e.engine
            if e.status is ModelState.LOADED and engine is not None and getattr(engine, "dead", False):
                log.error("the engine of %s died; POST /v1/models/%s/load starts it again",
                          e.spec.id, e.spec.id)
                e.drop_engine(ModelState.ERROR, "its engine died", died=True)
                self._stops.add(asyncio.create_task(engine.close(), name=f"stop {e.spec.id}"))

    def _own(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        self._loads.add(task)
        task.add_done_callback(self._loads.discard)
        # A failed load is logged and shown as the model's status `error`; retrieving the
        # exception here keeps asyncio from logging it again as "never retrieved".
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def close(self) -> None:
        """Cancel loads in progress, end requests in flight, stop every engine."""
        for task in list(self._loads):
            task.cancel()
        await asyncio.gather(*self._loads, return_exceptions=True)
        for e in self._models.entries.values():
            engine = e.engine
            if engine is not None and engine.kind == "vllm":
                await engine.interrupt(GenerationInterrupted("The lab is stopping; retry."))
            if engine is not None:
                if e.engine is engine:  # else an unload running meanwhile took it
                    e.drop_engine(*self._models.resting(e.spec.id))
                await engine.close()
        await asyncio.gather(*self._stops, return_exceptions=True)


def _freeze_libraries() -> None:
    # vLLM, torch and transformers are imported by now: some 700k long-lived objects that a
    # full garbage collection would walk (it stalled requests ~0.4 s, p99 at 32 connections).
    # Freezing puts them out of the collector's reach; the engine's own objects (~30k) come
    # after, so a stopped engine is still collected.
    gc.collect(1)
    gc.freeze()


def _collect_stopped_engine() -> None:
    # The stopped engine's reference cycles: a collection over what is not frozen (the
    # engine's objects, not the libraries'), tens of milliseconds.
    gc.collect()


async def _stop_when_started(start: asyncio.Future[Engine]) -> None:
    with contextlib.suppress(Exception):
        engine = await start
        await engine.close()
