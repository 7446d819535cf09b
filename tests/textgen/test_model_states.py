"""A model's state machine (textgen/models/states.py): the table is the only way to move.

The lifecycle's own moves (load, unload, evict, a dead engine) are driven end to end in
test_lifecycle.py; the remote ones in test_remote_engine.py and test_remote_replicas.py.
"""

from __future__ import annotations

import typing
from itertools import product

import pytest

from textgen import ModelSpec
from textgen.errors import InvalidTransition
from textgen.models import MOVES, RESTING, ModelEntry, ModelState, Status

SPEC = ModelSpec("local/a", 7.0, instruct=True, owned_by="local")


class _Engine:
    kind = "remote"

    def cache_identity(self, model: str) -> str:
        return "w"


def test_the_states_are_the_apis_status_strings_and_each_has_its_moves() -> None:
    assert {s.value for s in ModelState} == set(typing.get_args(Status))
    assert set(MOVES) == set(ModelState)
    assert {ModelState.NOT_LOADED, ModelState.UNAVAILABLE} == RESTING


@pytest.mark.parametrize(("start", "to"), list(product(ModelState, ModelState)))
def test_a_move_the_table_does_not_allow_raises_and_changes_nothing(
        start: ModelState, to: ModelState) -> None:
    entry = ModelEntry(SPEC, start, "why")
    if to in MOVES[start]:
        entry.move_to(to, "because")
        assert (entry.status, entry.reason) == (to, "because")
        return
    with pytest.raises(InvalidTransition, match=f"from {start.value} to {to.value}"):
        entry.move_to(to)
    assert (entry.status, entry.reason) == (start, "why")


def test_an_engine_comes_and_goes_through_moves() -> None:
    seen: list[tuple[ModelState, ModelState]] = []
    entry = ModelEntry(SPEC, ModelState.UNAVAILABLE,
                       on_move=lambda e, was: seen.append((was, e.status)))
    engine = _Engine()
    entry.attach(engine)  # type: ignore[arg-type]
    assert (entry.status, entry.engine, entry.cache_identity) == (ModelState.LOADED, engine, "w")
    with pytest.raises(InvalidTransition):
        entry.drop_engine(ModelState.LOADING)  # an engine's end is never a load
    assert entry.engine is engine and entry.status is ModelState.LOADED
    entry.drop_engine(ModelState.UNAVAILABLE, "gone")
    assert (entry.status, entry.engine, entry.loaded_at) == (ModelState.UNAVAILABLE, None, None)
    assert entry.cache_identity == "w"  # kept: cached answers of those weights stay valid
    assert seen == [(ModelState.UNAVAILABLE, ModelState.LOADED),
                    (ModelState.LOADED, ModelState.UNAVAILABLE)]


def test_entries_are_read_only_to_everyone_else() -> None:
    entry = ModelEntry(SPEC, ModelState.NOT_LOADED)
    for field in ("spec", "admission", "status", "reason", "engine", "loading", "active"):
        with pytest.raises(AttributeError):
            setattr(entry, field, None)
