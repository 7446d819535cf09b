"""The model registry: which models exist, which are loaded, and their engines' lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import embedded
from .catalog import CATALOG, ModelSpec
from .engines import Engine
from .engines.replicas import ReplicaInfo, ReplicaSet
from .errors import (
    BackendDown,
    GenerationInterrupted,
    InvalidRequest,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotReady,
    ModelUnavailable,
    TextGenError,
)

log = logging.getLogger(__name__)

Status = Literal["loaded", "loading", "unloading", "not_loaded", "unavailable", "error"]
EngineStarter = Callable[[str, Path], Awaitable[Engine]]
EngineCheck = Callable[[str, Path], Awaitable[None]]
# How long requests interrupted by an unload get to end before their engine stops anyway.
_INTERRUPTED_SECONDS = 5.0


async def _no_check(model_id: str, folder: Path) -> None:
    return None


@dataclass(slots=True)
class ModelEntry:
    spec: ModelSpec
    status: Status = "not_loaded"
    reason: str | None = None
    engine: Engine | None = None
    loaded_at: float | None = None
    last_used: float = 0.0
    gpu_memory_gb: float | None = None
    # What identifies the weights behind the model (cache key); kept after an unload.
    weights: str | None = None
    # The in-process engine died (until the model is loaded again): /health fails for it.
    died: bool = False
    # Requests admitted and not finished yet (streams included); set when there are none.
    active: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        self.idle.set()

    def admit(self) -> None:
        self.active += 1
        self.idle.clear()

    def release(self) -> None:
        self.active -= 1
        self.last_used = time.monotonic()
        if self.active == 0:
            self.idle.set()

    async def wait_idle(self, seconds: float) -> bool:
        """Wait (bounded) until no request runs on the model; False when some still do."""
        try:
            await asyncio.wait_for(self.idle.wait(), seconds)
        except TimeoutError:
            return False
        return True
    # Set while a load is running, so concurrent requests for the model wait on it.
    loading: asyncio.Task[None] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What /v1/models/{id} and the UI show of one model."""

    id: str
    status: Status
    reason: str | None
    loaded_at: float | None
    gpu_memory_usage: float | None
    instruct: bool
    size_class: str
    rate_limit: int
    backend: str
    owned_by: str
    created: int
    # Requests running on the model now (streams included).
    active: int = 0
    # A remote model: how its requests are routed, and each replica's state and load.
    routing: str | None = None
    replicas: tuple[ReplicaInfo, ...] = ()


class ModelRegistry:
    """Catalog entries with their status; loads in-process engines on demand (LRU-bounded)."""

    def __init__(
        self,
        *,
        cache_dir: Path,
        local_paths: dict[str, Path],
        start_engine: EngineStarter,
        check_engine: EngineCheck | None = None,
        max_loaded: int,
        drain_seconds: float = 10.0,
        rate_limits: dict[str, int] | None = None,
        gpu_memory_used_gb: Callable[[], float | None] = lambda: None,
        on_servable: Callable[[str], None] = lambda model_id: None,
    ) -> None:
        self._cache_dir = cache_dir
        self._local_paths = local_paths
        self._start_engine = start_engine
        self._check_engine = check_engine or _no_check
        self._max_loaded = max_loaded
        self._drain_seconds = drain_seconds
        # Loads in progress (cancelled on close) and engines being stopped (awaited on close).
        self._loads: set[asyncio.Task[None]] = set()
        self._stops: set[asyncio.Task[None]] = set()
        self._rate_limits = rate_limits or {}
        self._gpu_used = gpu_memory_used_gb
        self._on_servable = on_servable
        self.entries: dict[str, ModelEntry] = {}
        for spec in CATALOG:
            self.add(spec)
        for model_id in local_paths:
            if model_id not in self.entries:
                self.add(ModelSpec(model_id, 7.0, instruct=True, owned_by="local"))
        self._lock = asyncio.Lock()

    def add(self, spec: ModelSpec, *, engine: Engine | None = None) -> ModelEntry:
        """Register a model (remote backends add theirs); keeps an existing loaded entry."""
        entry = self.entries.get(spec.id)
        if entry is None:
            entry = self.entries[spec.id] = ModelEntry(spec)
        if engine is not None:
            entry.engine, entry.status, entry.reason = engine, "loaded", None
            entry.weights = engine.weights(spec.id)
            entry.loaded_at = entry.loaded_at or time.time()
            self._on_servable(spec.id)
        elif entry.engine is None:
            entry.status, entry.reason = self._resting_status(spec.id)
        return entry

    def mark_down(self, model_id: str, engine: Engine, reason: str) -> None:
        """A remote backend went down: its model shows `error` with the reason until it is back."""
        e = self.entries.get(model_id)
        if e is not None and e.engine is engine:
            e.status, e.reason = "error", reason

    def detach(self, model_id: str, engine: Engine) -> None:
        """A remote backend no longer serves a model."""
        e = self.entries.get(model_id)
        if e is not None and e.engine is engine:
            e.engine, e.loaded_at = None, None
            e.status, e.reason = self._resting_status(model_id)

    def _resting_status(self, model_id: str) -> tuple[Status, str | None]:
        if self._weights_folder(model_id) is not None or embedded.can_prepare(model_id):
            return "not_loaded", None
        return "unavailable", "weights are not on this machine and no remote backend serves it"

    def _weights_folder(self, model_id: str) -> Path | None:
        path = self._local_paths.get(model_id)
        if path is not None:
            return path if path.exists() else None
        return embedded.prepared_folder(model_id, self._cache_dir)

    def entry(self, model_id: str) -> ModelEntry:
        entry = self.entries.get(model_id)
        if entry is None:
            raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
        return entry

    def info(self, model_id: str) -> ModelInfo:
        e = self.entry(model_id)
        return ModelInfo(
            id=e.spec.id, status=e.status, reason=e.reason, loaded_at=e.loaded_at,
            gpu_memory_usage=e.gpu_memory_gb, instruct=e.spec.instruct,
            size_class=e.spec.size_class, rate_limit=self.rate_limit(model_id),
            backend=e.engine.kind if e.engine is not None else "vllm",
            owned_by=e.spec.owned_by, created=e.spec.created, active=e.active,
            **_replicas(e.engine),
        )

    def serve_args(self, model_id: str, overrides: dict[str, str]) -> tuple[str, ...]:
        """`vllm serve` flags for a model: VLLM_SERVE_ARGS, else the catalog's defaults."""
        given = overrides.get(model_id)
        if given is not None:
            return tuple(shlex.split(given))
        return self.entry(model_id).spec.serve_args

    def rate_limit(self, model_id: str) -> int:
        """Requests per minute: an override from RATE_LIMITS, else the seed's size class."""
        override = self._rate_limits.get(model_id)
        return override if override is not None else self.entry(model_id).spec.default_rate_limit

    def loaded(self) -> list[ModelEntry]:
        return [e for e in self.entries.values() if e.status == "loaded"]

    def check_servable(self, model_id: str) -> None:
        """Raise at once for a model that does not exist or cannot run here."""
        e = self.entry(model_id)
        if e.status == "unavailable":
            raise ModelUnavailable(
                f"The model '{model_id}' cannot run here: {e.reason}.", param="model"
            )

    def engine_for(self, model_id: str) -> Engine:
        """The engine serving a model, or the error that says why there is none."""
        e = self.entry(model_id)
        if e.engine is not None and e.status == "loaded":
            e.last_used = time.monotonic()
            return e.engine
        if e.status == "unloading":
            raise ModelNotReady(f"The model '{model_id}' is being {e.reason}.")
        if e.engine is not None:  # a remote backend that is down
            raise BackendDown(f"The model '{model_id}' is unavailable: {e.reason}.")
        if e.status == "unavailable":
            raise ModelUnavailable(
                f"The model '{model_id}' cannot run here: {e.reason}.", param="model"
            )
        if e.status == "loading":
            raise ModelNotReady(f"The model '{model_id}' is loading; retry shortly.")
        if e.status == "error":
            raise ModelNotReady(f"The model '{model_id}' is not running: {e.reason}.")
        raise ModelNotReady(
            f"The model '{model_id}' is not loaded; load it first "
            f"(POST /v1/models/{model_id}/load).",
            retry_after=30.0,
        )

    async def load(self, model_id: str) -> ModelInfo:
        """Load a model in-process (waits for a load already running); unloads the LRU past the limit."""
        e = self.entry(model_id)
        if e.status == "loaded":
            return self.info(model_id)
        if e.engine is not None:  # a remote backend that is down: nothing to load here
            raise BackendDown(f"The model '{model_id}' is unavailable: {e.reason}.")
        if e.status == "unavailable":
            raise ModelUnavailable(f"The model '{model_id}' cannot run here: {e.reason}.", param="model")
        if e.loading is None:
            e.loading = self._own(asyncio.create_task(self._load(e), name=f"load {model_id}"))
        task = e.loading
        await asyncio.shield(task)
        return self.info(model_id)

    async def _load(self, e: ModelEntry) -> None:
        model_id = e.spec.id
        async with self._lock:
            e.status, e.reason = "loading", None
            try:
                folder = self._local_paths.get(model_id)
                if folder is None:
                    folder = await asyncio.to_thread(embedded.prepare, model_id, self._cache_dir)
                # What a start would refuse (a folder that cannot load, bad flags) is found
                # before anything is evicted: the loaded model stays when this one cannot come.
                await self._check_engine(model_id, folder)
                # vLLM, torch and transformers are imported by now: some 700k long-lived objects
                # that a full garbage collection would walk (it stalled requests ~0.4 s, p99 at 32
                # connections). Freezing puts them out of the collector's reach; the engine's own
                # objects (~30k) come after, so a stopped engine is still collected.
                gc.collect(1)
                gc.freeze()
                await self._make_room(model_id)
                before = self._gpu_used()
                engine = await self._start(model_id, folder)
                after = self._gpu_used()
            except asyncio.CancelledError:
                e.status, e.reason = self._resting_status(model_id)
                raise
            except Exception as exc:
                reason = (exc.message if isinstance(exc, TextGenError)
                          else str(exc)[:300] if isinstance(exc, ValueError)  # bad folder or flags
                          else type(exc).__name__)
                log.exception("loading %s failed", model_id)
                e.status, e.reason = "error", reason
                if isinstance(exc, TextGenError):
                    raise
                raise ModelLoadFailed(
                    f"The model '{model_id}' could not be loaded: {reason}") from exc
            finally:
                e.loading = None
            e.engine, e.status, e.loaded_at = engine, "loaded", time.time()
            e.weights, e.died = engine.weights(model_id), False
            e.last_used = time.monotonic()
            e.gpu_memory_gb = None if after is None else round(max(after - (before or 0), 0), 3)
            self._on_servable(model_id)
            log.info("model %s loaded", model_id)

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
        local = [e for e in self.loaded() if e.engine is not None and e.engine.kind == "vllm"]
        while len(local) >= self._max_loaded > 0:
            # Idle models first, then the least recently used (a request's end counts as a use).
            victim = min(local, key=lambda x: (x.active > 0, x.last_used))
            log.info("unloading %s (least recently used) to load %s within %d models",
                     victim.spec.id, coming, self._max_loaded)
            await self._unload(victim, f"unloaded to make room for '{coming}'")
            local.remove(victim)

    async def unload(self, model_id: str) -> ModelInfo:
        e = self.entry(model_id)
        if e.loading is not None:
            raise ModelNotReady(f"The model '{model_id}' is loading; unload it when it is loaded.")
        if e.engine is not None and e.engine.kind != "vllm":
            raise InvalidRequest(
                f"The model '{model_id}' is served by a remote backend; it cannot be unloaded "
                "here.", param="model",
            )
        async with self._lock:
            await self._unload(e, "unloaded on request")
        return self.info(model_id)

    async def _unload(self, e: ModelEntry, why: str) -> None:
        """Stop admitting to the model, let its requests finish (bounded), end the rest with
        an error, then stop its engine."""
        if e.engine is None or e.engine.kind != "vllm":
            return
        engine = e.engine
        e.status, e.reason = "unloading", why
        if not await e.wait_idle(self._drain_seconds):
            log.warning("%s: ending %d request(s) still running after %.0f s", e.spec.id,
                        e.active, self._drain_seconds)
            await engine.interrupt(GenerationInterrupted(
                f"The model '{e.spec.id}' was {why} while this request was running; retry."))
            await e.wait_idle(_INTERRUPTED_SECONDS)
        e.engine = None
        e.status, e.reason = self._resting_status(e.spec.id)
        e.loaded_at, e.gpu_memory_gb = None, None
        await engine.close()
        del engine
        # The stopped engine's reference cycles: a collection over what is not frozen (the
        # engine's objects, not the libraries'), tens of milliseconds.
        gc.collect()

    def check_engines(self) -> None:
        """Mark an in-process model whose engine died as `error`, and stop that engine.

        vLLM's engine core can die (a crash, the OOM killer); every request to it fails from
        then on, so it must not look `loaded` to /health, the readiness probe or the UI.
        """
        for e in self.entries.values():
            if e.status == "loaded" and e.engine is not None and getattr(e.engine, "dead", False):
                log.error("the engine of %s died; POST /v1/models/%s/load starts it again",
                          e.spec.id, e.spec.id)
                engine, e.engine = e.engine, None
                e.status, e.reason, e.died = "error", "its engine died", True
                e.loaded_at = None
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
        for e in self.entries.values():
            engine = e.engine
            if engine is not None and engine.kind == "vllm":
                await engine.interrupt(GenerationInterrupted("The lab is stopping; retry."))
            if engine is not None:
                e.engine = None
                await engine.close()
        await asyncio.gather(*self._stops, return_exceptions=True)


async def _stop_when_started(start: asyncio.Future[Engine]) -> None:
    with contextlib.suppress(Exception):
        engine = await start
        await engine.close()


def _replicas(engine: Engine | None) -> dict[str, Any]:
    """A remote model's routing policy and replicas, for ModelInfo."""
    if not isinstance(engine, ReplicaSet):
        return {}
    return {"routing": engine.policy, "replicas": engine.replica_info()}
