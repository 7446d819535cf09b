"""A model's life as a state machine: its states, the moves allowed between them, its entry.

    not_loaded ──▶ loading ──▶ loaded ──▶ unloading ──▶ not_loaded     an in-process engine
                      │           │
                      ▼           ▼ its engine died
                    error ◀───────┘
    error ──▶ loading                          loaded again (POST /v1/models/{id}/load)
    loading ──▶ not_loaded                     a load cancelled (the lab stops)
    not_loaded, unavailable, error ──▶ loaded  a remote backend serves it (again)
    loaded ──▶ error                           every replica of a remote model is down
    loaded, error ──▶ not_loaded               no remote backend serves it any more

`not_loaded` and `unavailable` are where a model without an engine rests: `unavailable` when
its weights are not on this machine (`ModelRegistry.resting` says which), so wherever a move
ends in `not_loaded` it may end in `unavailable` instead. The status strings are the API's
(`/v1/models/{id}`, `/health`, the UI).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Literal

from ..catalog import ModelSpec
from ..engines import Engine
from ..errors import InvalidTransition
from .admission import Admission

log = logging.getLogger(__name__)

# The status as the API and the UI read it (ModelInfo.status).
Status = Literal["loaded", "loading", "unloading", "not_loaded", "unavailable", "error"]


class ModelState(StrEnum):
    NOT_LOADED = "not_loaded"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    UNAVAILABLE = "unavailable"
    ERROR = "error"


RESTING = frozenset({ModelState.NOT_LOADED, ModelState.UNAVAILABLE})

# Every move a model may make; `move_to` refuses the rest. A move to the same state is listed
# where it happens: a remote model found again at each discovery (loaded), or still down with
# a new reason (error).
MOVES: dict[ModelState, frozenset[ModelState]] = {
    ModelState.NOT_LOADED: frozenset({ModelState.LOADING, ModelState.LOADED}),
    ModelState.UNAVAILABLE: frozenset({ModelState.LOADED}),
    ModelState.LOADING: frozenset({ModelState.LOADED, ModelState.ERROR, *RESTING}),
    ModelState.LOADED: frozenset({ModelState.LOADED, ModelState.UNLOADING, ModelState.ERROR,
                                  *RESTING}),
    ModelState.UNLOADING: RESTING,
    ModelState.ERROR: frozenset({ModelState.ERROR, ModelState.LOADING, ModelState.LOADED,
                                 *RESTING}),
}

# Told of every move once it is made (the registry primes a servable model's metric series).
MoveListener = Callable[["ModelEntry", ModelState], None]


class ModelEntry:
    """One model's state and the engine serving it. Everyone reads it; only its own methods,
    called by the registry and the engine lifecycle, change it, each through `move_to`."""

    __slots__ = ("_spec", "_admission", "_status", "_reason", "_since", "_engine", "_loaded_at",
                 "_gpu_memory_gb", "_weights", "_died", "_loading", "_on_move")

    def __init__(self, spec: ModelSpec, status: ModelState, reason: str | None = None, *,
                 on_move: MoveListener | None = None) -> None:
        self._spec = spec
        self._admission = Admission(spec.id)
        self._status = status
        self._reason = reason
        self._since = time.monotonic()
        self._engine: Engine | None = None
        self._loaded_at: float | None = None
        self._gpu_memory_gb: float | None = None
        self._weights: str | None = None
        self._died = False
        self._loading: asyncio.Future[None] | None = None
        self._on_move = on_move

    # --- what everyone reads ------------------------------------------------------------------

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def admission(self) -> Admission:
        """The requests running on the model: the pipeline takes and gives back its slots."""
        return self._admission

    @property
    def status(self) -> ModelState:
        return self._status

    @property
    def reason(self) -> str | None:
        """Why the model is in its state (an error, an unload), where there is a why."""
        return self._reason

    @property
    def since(self) -> float:
        """`time.monotonic()` of the last move."""
        return self._since

    @property
    def engine(self) -> Engine | None:
        """The engine serving the model: in-process, or a remote backend's (even one down)."""
        return self._engine

    @property
    def loaded_at(self) -> float | None:
        return self._loaded_at

    @property
    def gpu_memory_gb(self) -> float | None:
        """GPU memory its in-process engine took when it started, when that could be read."""
        return self._gpu_memory_gb

    @property
    def cache_identity(self) -> str | None:
        """What identifies the weights behind the model (cache key); kept after an unload, so
        its cached answers keep flowing."""
        return self._weights

    @property
    def died(self) -> bool:
        """The in-process engine died (until the model is loaded again): /health fails for it."""
        return self._died

    @property
    def loading(self) -> asyncio.Future[None] | None:
        """The load queued or running, for requests to wait on (it is `loading` only once the
        load has the registry's lock)."""
        return self._loading

    @property
    def active(self) -> int:
        """Requests running on the model now (streams included)."""
        return self.admission.active

    @property
    def last_used(self) -> float:
        return self.admission.last_used

    # --- moves --------------------------------------------------------------------------------

    def move_to(self, status: ModelState, reason: str | None = None) -> None:
        """The one place a model's status changes: checked against MOVES, stamped, logged.

        Raises InvalidTransition (and changes nothing) for a move the table does not allow.
        """
        self._check(status)
        was = self._status
        self._status, self._reason = status, reason
        self._since = time.monotonic()
        if was is not status:
            log.debug("model %s: %s -> %s%s", self.spec.id, was, status,
                      f" ({reason})" if reason else "")
        if self._on_move is not None:
            self._on_move(self, was)

    def serve(self, engine: Engine, *, gpu_memory_gb: float | None = None) -> None:
        """An in-process engine started for the model: `loaded`."""
        self._check(ModelState.LOADED)
        self._engine, self._weights, self._died = engine, engine.cache_identity(self.spec.id), False
        self._loaded_at, self._gpu_memory_gb = time.time(), gpu_memory_gb
        self.admission.touch()
        self.move_to(ModelState.LOADED)

    def attach(self, engine: Engine) -> None:
        """A remote backend serves the model (again): `loaded`."""
        self._check(ModelState.LOADED)
        self._engine, self._weights = engine, engine.cache_identity(self.spec.id)
        self._loaded_at = self._loaded_at or time.time()
        self.move_to(ModelState.LOADED)

    def drop_engine(self, status: ModelState, reason: str | None = None, *,
                    died: bool = False) -> None:
        """The engine no longer serves the model: it rests, or shows `error` (`died`: the
        in-process engine died, which /health reports until a load brings it back)."""
        self._check(status)
        self._engine, self._loaded_at = None, None
        self._died = self._died or died  # only a load that succeeds clears it
        if status in RESTING:
            # What a running engine took is no longer taken; a dead one's reading is kept, to
            # show what it had when it died.
            self._gpu_memory_gb = None
        self.move_to(status, reason)

    def track_load(self, load: asyncio.Future[None] | None) -> None:
        """A load of the model was queued (requests wait on it), or ended (None)."""
        self._loading = load

    def _check(self, status: ModelState) -> None:
        if status not in MOVES[self._status]:
            raise InvalidTransition(self.spec.id, self._status.value, status.value)

    def __repr__(self) -> str:
        return f"ModelEntry({self.spec.id!r}, {self._status.value}, reason={self._reason!r})"
