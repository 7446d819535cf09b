"""Models: which exist, the state each is in, and their in-process engines' lifecycle.

    states.py      ModelState, the table of allowed moves, ModelEntry (the one place a
                   model's status changes: `move_to`)
    registry.py    ModelRegistry: every known model's entry, lookups, rate limits, where the
                   weights are, the marks remote backends make; ModelInfo
    lifecycle.py   EngineLifecycle: load, unload, evict (LRU), drain, close, dead engines
    admission.py   Admission: the requests running on one model, and its last use
"""

from .admission import Admission
from .lifecycle import EngineCheck, EngineLifecycle, EngineStarter
from .registry import ModelInfo, ModelRegistry
from .states import MOVES, RESTING, ModelEntry, ModelState, Status

__all__ = [
    "MOVES", "RESTING", "Admission", "EngineCheck", "EngineLifecycle", "EngineStarter",
    "ModelEntry", "ModelInfo", "ModelRegistry", "ModelState", "Status",
]
