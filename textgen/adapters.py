"""LoRA adapters served as models of their own, on the engine of their base model (or, for a
model served remotely, loaded on its servers by vLLM's own route: textgen.backends).

An adapter is a folder in PEFT's format (`adapter_config.json` + the weights). It is checked
here before vLLM sees it, so a bad adapter is a clear 4xx and never disturbs the base engine:
a folder with no adapter is a 404 (as vLLM's server answers), anything that is not a LoRA, a
rank past MAX_LORA_RANK or a base that is not loaded a 400.

Once loaded, the adapter joins the registry as a model whose engine is an `AdapterEngine`: the
base's engine, under the adapter's name. vLLM's serving classes resolve the name to the
adapter, so the request body goes in as sent. The adapter's cache identity is the base's with
a hash of the adapter's files: reloading new weights under the same name never serves the old
answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import ModelSpec
from .engines.replicas import ReplicaSet
from .errors import (
    GenerationInterrupted,
    InvalidRequest,
    ModelNotReady,
    RequestRejected,
    TextGenError,
)
from .models.states import ModelState
from .request import OpenAIRequest

log = logging.getLogger(__name__)

CONFIG = "adapter_config.json"
_INTERRUPTED_SECONDS = 5.0  # for requests ended by an unload to let go of their slots


@dataclass(frozen=True, slots=True)
class AdapterFolder:
    """What the lab reads of an adapter before loading it."""

    path: Path
    rank: int
    base: str | None  # its base_model_name_or_path
    identity: str  # sha256 of its files


def inspect(path: Path, *, max_rank: int) -> AdapterFolder:
    """Read and check an adapter folder (blocking: call it off the event loop)."""
    path = path.expanduser()
    config_file = path / CONFIG
    if not config_file.is_file():
        # vLLM's own words and status for a path with no adapter.
        raise RequestRejected(f"No adapter found for {path}: it has no {CONFIG}.",
                              status=404, param="lora_path")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"The adapter's {CONFIG} is not readable JSON ({exc}).",
                             param="lora_path") from None
    if not isinstance(config, dict) or str(config.get("peft_type", "")).upper() != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else None
        raise InvalidRequest(f"{path} is not a LoRA adapter (peft_type {kind!r}).",
                             param="lora_path")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise InvalidRequest(f"The adapter's {CONFIG} has no rank 'r'.", param="lora_path")
    if rank > max_rank:
        raise InvalidRequest(
            f"The adapter's rank is {rank}; this lab's engines take adapters up to rank "
            f"{max_rank} (MAX_LORA_RANK).", param="lora_path")
    weights = sorted(p for p in path.iterdir()
                     if p.name.startswith("adapter_model.") and p.is_file())
    if not weights:
        raise RequestRejected(f"No adapter found for {path}: it has no adapter_model weights.",
                              status=404, param="lora_path")
    digest = hashlib.sha256()
    for file in [config_file, *weights]:
        digest.update(file.name.encode())
        with file.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    base = config.get("base_model_name_or_path")
    return AdapterFolder(path, rank, base if isinstance(base, str) else None,
                         digest.hexdigest()[:32])


def matches(base: str | None, model_id: str, folder: Path | None) -> bool:
    """Whether an adapter's `base_model_name_or_path` names this model: its id, its folder,
    or the folder's name (PEFT writes whichever name the trainer loaded the base by)."""
    if not base:
        return False
    if base == model_id or base.rsplit("/", 1)[-1] == model_id.rsplit("/", 1)[-1]:
        return True
    return folder is not None and (Path(base).expanduser() == folder
                                   or Path(base).name == folder.name)


class AdapterEngine:
    """The engine of an adapter: its base's engine, asked for the adapter by name."""

    kind = "lora"

    def __init__(self, name: str, base_id: str, base: Any, folder: AdapterFolder) -> None:
        self.name = name
        self.base_id = base_id
        self.base = base
        self.folder = folder
        self._identity = hashlib.sha256(
            f"{base.cache_identity(base_id)}|lora|{folder.identity}".encode()).hexdigest()[:32]

    async def generate(self, request: OpenAIRequest, request_id: str) -> Any:
        return await self.base.generate(request, request_id)

    async def tokenize(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.base.tokenize(path, body)
        return result

    async def interrupt(self, error: TextGenError) -> None:
        """End the adapter's requests in flight, not its base's."""
        await self.base.interrupt(error, adapter=self.name)

    def cache_identity(self, model: str) -> str:
        return self._identity

    async def close(self) -> None:
        """The base engine is the base model's to stop."""


class Adapters:
    """The adapters loaded on the lab's in-process engines: load, unload, and their bases'
    comings and goings (LORA_MODULES load with their base; an unloaded base takes its
    adapters with it)."""

    def __init__(self, models: Any, *, max_rank: int, modules: dict[str, Path],
                 drain_seconds: float = 10.0) -> None:
        self._models = models
        self._max_rank = max_rank
        self._modules = modules
        self._drain_seconds = drain_seconds
        # The remote backends (textgen.backends), for adapters of models served remotely.
        self.remote: Any = None

    async def load(self, name: str, path: str | Path, base: str | None = None, *,
                   replace: bool = False) -> str:
        """Load the adapter at `path` as the model `name`; returns its base model's id.

        As vLLM's server, a name already loaded is refused unless `replace` (its
        `load_inplace`) is asked for.
        """
        if not name or not str(path):
            raise InvalidRequest("Both 'lora_name' and 'lora_path' must be provided.",
                                 param="lora_name" if not name else "lora_path")
        if base and isinstance(self._models.entry(base).engine, ReplicaSet):
            # A remote base: its servers load it from a path of theirs, by vLLM's route.
            body: dict[str, Any] = {"lora_name": name, "lora_path": str(path)}
            if replace:
                body["load_inplace"] = True
            await self.remote.change_adapter(base, "load", body)
            return base
        self._check_name(name, replace=replace)
        folder = await asyncio.to_thread(inspect, Path(path), max_rank=self._max_rank)
        return await self._load(name, folder, base)

    def _check_name(self, name: str, *, replace: bool) -> None:
        existing = self._models.entries.get(name)
        if existing is None:
            return
        if not isinstance(existing.engine, AdapterEngine):
            raise InvalidRequest(f"The lora adapter '{name}' conflicts with a model of that "
                                 "name.", param="lora_name")
        if not replace:  # vLLM's words
            raise InvalidRequest(f"The lora adapter '{name}' has already been loaded. If you "
                                 "want to load the adapter in place, set 'load_inplace' to "
                                 "True.", param="lora_name")

    async def _load(self, name: str, folder: AdapterFolder, base: str | None) -> str:
        base_id, engine = self._base(folder, base)
        await engine.add_adapter(name, folder.path)
        spec = self._models.entry(base_id).spec
        existing = self._models.entries.get(name)
        if existing is not None:
            self._models.remove(name, existing.engine)
        self._models.add(ModelSpec(name, spec.params_billions, instruct=spec.instruct,
                                   owned_by=spec.owned_by),
                         engine=AdapterEngine(name, base_id, engine, folder))
        return base_id

    async def unload(self, name: str) -> None:
        entry = self._models.entries.get(name)
        if entry is not None and isinstance(entry.engine, ReplicaSet) and entry.engine.adapter():
            await self.remote.change_adapter(name, "unload", {"lora_name": name})
            return
        if entry is None or not isinstance(entry.engine, AdapterEngine):
            # vLLM's words and status for an adapter that is not loaded.
            raise RequestRejected(f"The lora adapter '{name}' cannot be found.", status=404,
                                  param="lora_name")
        if entry.status is ModelState.UNLOADING:
            raise ModelNotReady(f"The lora adapter '{name}' is being unloaded already.")
        adapter: AdapterEngine = entry.engine
        # As a model's unload: no new requests, those in flight may finish (bounded), the
        # rest end with an error that says why; the base's own requests go on.
        entry.move_to(ModelState.UNLOADING, "unloaded on request")
        if not await entry.admission.wait_idle(self._drain_seconds):
            log.warning("LoRA adapter %s: ending %d request(s) still running after %.0f s",
                        name, entry.active, self._drain_seconds)
            await adapter.interrupt(GenerationInterrupted(
                f"The lora adapter '{name}' was unloaded while this request was running; "
                "retry."))
            await entry.admission.wait_idle(_INTERRUPTED_SECONDS)
        self._models.remove(name, adapter)
        await adapter.base.remove_adapter(name)

    def _base(self, folder: AdapterFolder, named: str | None) -> tuple[str, Any]:
        """The loaded in-process engine the adapter goes to: the one named, else the one its
        config names, else the only one there is."""
        engines = {e.spec.id: e.engine for e in self._models.loaded()
                   if getattr(e.engine, "kind", None) == "vllm"}
        if named:
            if named not in engines:
                raise InvalidRequest(f"The base model '{named}' is not loaded in this lab.",
                                     param="base_model_name")
            candidates = [named]
        elif folder.base:
            candidates = [m for m in engines
                          if matches(folder.base, m, self._models.local_folder(m))]
            if not candidates:
                raise InvalidRequest(
                    f"The adapter is for '{folder.base}', which is not loaded here (loaded: "
                    f"{', '.join(engines) or 'none'}); load it, or name the base with "
                    "'base_model_name'.", param="lora_path")
        else:
            candidates = list(engines)
            if len(candidates) != 1:
                raise InvalidRequest("The adapter names no base model; name it with "
                                     "'base_model_name'.", param="base_model_name")
        base_id = candidates[0]
        engine = engines[base_id]
        if not engine.lora_enabled:
            raise InvalidRequest(f"The model '{base_id}' runs without LoRA; start the lab with "
                                 "ENABLE_LORA=true to load adapters.", param="lora_name")
        return base_id, engine

    # --- the bases' comings and goings ------------------------------------------------------

    async def base_loaded(self, base_id: str) -> None:
        """Load the LORA_MODULES meant for a base that has just loaded."""
        for name, path in self._modules.items():
            try:
                folder = await asyncio.to_thread(inspect, Path(path), max_rank=self._max_rank)
                if folder.base and not matches(folder.base, base_id,
                                               self._models.local_folder(base_id)):
                    continue
                self._check_name(name, replace=False)
                await self._load(name, folder, base_id)
                log.info("LoRA adapter %s loaded on %s", name, base_id)
            except TextGenError as exc:
                log.error("LoRA adapter %s (LORA_MODULES) not loaded: %s", name, exc.message)

    def base_left(self, base_id: str) -> None:
        """A base model's engine stopped: its adapters go with it."""
        for entry in list(self._models.entries.values()):
            engine = entry.engine
            if isinstance(engine, AdapterEngine) and engine.base_id == base_id:
                self._models.remove(entry.spec.id, engine)
