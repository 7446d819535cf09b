"""Blind pairwise votes and their leaderboard (textgen.experiments.arena): the ranking on
votes made up here, and votes kept on both databases. In the browser: tests/ui/test_browser.py."""

from __future__ import annotations

import uuid

import pytest

from tests.textgen.test_run_store import store  # noqa: F401  (the fixture, on both databases)
from textgen import InvalidRequest
from textgen.experiments.arena import Arena, bradley_terry, leaderboard
from textgen.runs import RunStore


def games(wins: int, losses: int, ties: int = 0, a: str = "A", b: str = "B") -> list:
    return [(a, b, "left")] * wins + [(a, b, "right")] * losses + [(b, a, "tie")] * ties


def test_more_wins_rank_higher_and_the_mean_is_1000() -> None:
    ratings = bradley_terry(games(8, 2) + games(7, 3, a="B", b="C"))
    assert ratings["A"] > ratings["B"] > ratings["C"]
    assert sum(ratings.values()) / 3 == pytest.approx(1000, abs=40)  # geometric, near


def test_ties_and_even_records_rank_even_and_order_does_not_matter() -> None:
    even = bradley_terry(games(3, 3, ties=4))
    assert even["A"] == pytest.approx(even["B"])
    forward = games(6, 2) + games(1, 4, a="B", b="C")
    assert bradley_terry(forward) == pytest.approx(bradley_terry(list(reversed(forward))))


def test_an_unbeaten_configuration_keeps_a_finite_rating() -> None:
    ratings = bradley_terry(games(5, 0))
    assert 1000 < ratings["A"] < 1400 and ratings["B"] < 1000


def test_the_board_is_best_first_with_an_interval_around_each_rating() -> None:
    board = leaderboard(games(12, 4, ties=2) + games(3, 9, a="C", b="B"), resamples=100)
    assert list(board["config"]) == ["A", "B", "C"]
    assert (board["low"] <= board["rating"]).all() and (board["rating"] <= board["high"]).all()
    a = board.iloc[0]
    assert (a["votes"], a["wins"], a["ties"], a["losses"]) == (18, 12, 2, 4)
    # More votes of the same kind: a narrower interval.
    wide = leaderboard(games(3, 1), resamples=100).set_index("config")
    narrow = leaderboard(games(30, 10), resamples=100).set_index("config")
    assert (narrow.loc["A", "high"] - narrow.loc["A", "low"]
            < wide.loc["A", "high"] - wide.loc["A", "low"])
    assert leaderboard([]).empty


async def test_votes_are_kept_per_arena_and_bad_ones_refused(store: RunStore) -> None:  # noqa: F811
    arena, name = Arena(store), f"test-{uuid.uuid4().hex[:8]}"
    for winner in ("left", "left", "tie"):
        await arena.vote("m temperature=0.2", "m temperature=1", winner, arena=name,
                         prompt="Name three colours.")
    await arena.vote("x", "y", "right", arena=f"{name}-other")
    kept = await arena.votes(name)
    assert [v["winner"] for v in kept] == ["left", "left", "tie"]
    assert kept[0]["prompt"] == "Name three colours."
    board = await arena.leaderboard(name, resamples=20)
    assert list(board["config"]) == ["m temperature=0.2", "m temperature=1"]
    for bad in ({"winner": "both"}, {"right": "m temperature=0.2"}):
        with pytest.raises(InvalidRequest):
            await arena.vote(**{"left": "m temperature=0.2", "right": "m temperature=1",
                                "winner": "left", **bad})
