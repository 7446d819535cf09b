"""The model registry: every model the lab knows, its state, and what it may serve.

Models come from the seed's catalog, MODEL_PATHS and the remote backends (which attach their
engines and mark them down or gone). Starting and stopping in-process engines is
`textgen.models.lifecycle`; a request's slot on a model is its entry's `Admission`.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from .. import embedded
from ..adapters import AdapterEngine
from ..catalog import CATALOG, ModelSpec
from ..engines import Engine
from ..engines.replicas import ReplicaInfo, ReplicaSet
from ..errors import BackendDown, ModelNotFound, ModelNotReady, ModelUnavailable
from .states import ModelEntry, ModelState, Status

_NOT_HERE = "weights are not on this machine and no remote backend serves it"


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
    # A LoRA adapter: its base model, and the adapter's folder (vLLM's `parent` and `root`).
    parent: str | None = None
    root: str | None = None
    # "generate" (completions, chat) or "pooling" (embeddings, pooling, score): the catalog's word.
    runner: str = "generate"


class ModelRegistry:
    """Every known model's entry: lookups, limits, and the marks remote backends make."""

    def __init__(
        self,
        *,
        cache_dir: Path,
        local_paths: dict[str, Path],
        rate_limits: dict[str, int] | None = None,
        on_servable: Callable[[str], None] = lambda model_id: None,
        on_left: Callable[[str], None] = lambda model_id: None,
    ) -> None:
        self._cache_dir = cache_dir
        self._local_paths = local_paths
        self._rate_limits = rate_limits or {}
        self._on_servable = on_servable
        self._on_left = on_left
        self._entries: dict[str, ModelEntry] = {}
        # Read-only for everyone else: models join through `add`.
        self.entries: Mapping[str, ModelEntry] = MappingProxyType(self._entries)
        for spec in CATALOG:
            self.add(spec)
        for model_id in local_paths:
            if model_id not in self._entries:
                self.add(ModelSpec(model_id, 7.0, instruct=True, owned_by="local"))

    # --- models joining, and remote backends' marks ---------------------------------------

    def add(self, spec: ModelSpec, *, engine: Engine | None = None) -> ModelEntry:
        """Register a model (remote backends add theirs, with their engine); an existing entry
        is kept, and served by `engine` when one is given."""
        entry = self._entries.get(spec.id)
        if entry is None:
            entry = ModelEntry(spec, *self.resting(spec.id), on_move=self._moved)
            self._entries[spec.id] = entry
        if engine is not None:
            entry.attach(engine)
        return entry

    def mark_down(self, model_id: str, engine: Engine, reason: str) -> None:
        """A remote backend went down: its model shows `error` with the reason until it is back."""
        e = self._entries.get(model_id)
        if e is not None and e.engine is engine:
            e.move_to(ModelState.ERROR, reason)

    def detach(self, model_id: str, engine: Engine) -> None:
        """A remote backend no longer serves a model."""
        e = self._entries.get(model_id)
        if e is not None and e.engine is engine:
            e.drop_engine(*self.resting(model_id))

    def remove(self, model_id: str, engine: Engine) -> None:
        """A LoRA adapter unloaded, or gone with its base: it leaves the list of models (as
        vLLM lists adapters only while they are loaded)."""
        e = self._entries.get(model_id)
        if e is not None and e.engine is engine:
            del self._entries[model_id]

    def _moved(self, entry: ModelEntry, was: ModelState) -> None:
        if entry.status is ModelState.LOADED:
            self._on_servable(entry.spec.id)
        elif was is ModelState.LOADED:
            self._on_left(entry.spec.id)

    # --- where the weights are ------------------------------------------------------------

    def resting(self, model_id: str) -> tuple[ModelState, str | None]:
        """Where a model without an engine rests: `not_loaded` when it could load here."""
        if self._weights_folder(model_id) is not None or embedded.can_prepare(model_id):
            return ModelState.NOT_LOADED, None
        return ModelState.UNAVAILABLE, _NOT_HERE

    def local_folder(self, model_id: str) -> Path | None:
        """Where a model's weights are on this machine, if they are."""
        return self._weights_folder(model_id)

    def _weights_folder(self, model_id: str) -> Path | None:
        path = self._local_paths.get(model_id)
        if path is not None:
            return path if path.exists() else None
        return embedded.prepared_folder(model_id, self._cache_dir)

    async def folder(self, model_id: str) -> Path:
        """A model's weights folder: its MODEL_PATHS entry, else the embedded model prepared
        (once, off the event loop) in the cache."""
        folder = self._local_paths.get(model_id)
        if folder is None:
            folder = await asyncio.to_thread(embedded.prepare, model_id, self._cache_dir)
        return folder

    # --- lookups --------------------------------------------------------------------------

    def entry(self, model_id: str) -> ModelEntry:
        entry = self._entries.get(model_id)
        if entry is None:
            raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
        return entry

    def info(self, model_id: str) -> ModelInfo:
        e = self.entry(model_id)
        return ModelInfo(
            id=e.spec.id, status=cast(Status, e.status.value), reason=e.reason, loaded_at=e.loaded_at,
            gpu_memory_usage=e.gpu_memory_gb, instruct=e.spec.instruct,
            size_class=e.spec.size_class, rate_limit=self.rate_limit(model_id),
            backend=e.engine.kind if e.engine is not None else "vllm",
            owned_by=e.spec.owned_by, created=e.spec.created, active=e.active,
            runner=e.spec.runner, **_replicas(e.engine), **_adapter(e.engine),
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
        return [e for e in self._entries.values() if e.status is ModelState.LOADED]

    def check_servable(self, model_id: str) -> None:
        """Raise at once for a model that does not exist or cannot run here."""
        e = self.entry(model_id)
        if e.status is ModelState.UNAVAILABLE:
            raise ModelUnavailable(
                f"The model '{model_id}' cannot run here: {e.reason}.", param="model"
            )

    def engine_for(self, model_id: str) -> Engine:
        """The engine serving a model, or the error that says why there is none."""
        e = self.entry(model_id)
        if e.engine is not None and e.status is ModelState.LOADED:
            e.admission.touch()
            return e.engine
        if e.status is ModelState.UNLOADING:
            raise ModelNotReady(f"The model '{model_id}' is being {e.reason}.")
        if e.engine is not None:  # a remote backend that is down
            raise BackendDown(f"The model '{model_id}' is unavailable: {e.reason}.")
        if e.status is ModelState.UNAVAILABLE:
            raise ModelUnavailable(
                f"The model '{model_id}' cannot run here: {e.reason}.", param="model"
            )
        if e.status is ModelState.LOADING:
            raise ModelNotReady(f"The model '{model_id}' is loading; retry shortly.")
        if e.status is ModelState.ERROR:
            raise ModelNotReady(f"The model '{model_id}' is not running: {e.reason}.")
        raise ModelNotReady(
            f"The model '{model_id}' is not loaded; load it first "
            f"(POST /v1/models/{model_id}/load).",
            retry_after=30.0,
        )


def _replicas(engine: Engine | None) -> dict[str, Any]:
    """A remote model's routing policy and replicas, for ModelInfo."""
    if not isinstance(engine, ReplicaSet):
        return {}
    return {"routing": engine.policy, "replicas": engine.replica_info()}


def _adapter(engine: Engine | None) -> dict[str, Any]:
    """A LoRA adapter's base and folder, for ModelInfo (in-process, or as remote replicas
    list it)."""
    if isinstance(engine, ReplicaSet) and (listed := engine.adapter()) is not None:
        return {"parent": listed[0], "root": listed[1]}
    if not isinstance(engine, AdapterEngine):
        return {}
    return {"parent": engine.base_id, "root": str(engine.folder.path)}
