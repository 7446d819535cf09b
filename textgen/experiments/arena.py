"""Blind pairwise comparison: two configurations answer one prompt anonymously, the researcher
says which answer is better (or a tie), and a leaderboard ranks the configurations from the
votes.

Votes are kept in the run store (`votes`), one leaderboard per arena. The ranking is the
Bradley–Terry model (what Chatbot Arena moved to from online Elo: it does not depend on the
order the votes came in), fitted by Hunter's MM iteration, a tie counting half a win each way,
shown on the Elo scale (1000 is the average configuration, +400 is 10:1 odds), with 95%
intervals from resampling the votes.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from sqlalchemy import insert, select

from ..errors import InvalidRequest
from ..runs.tables import VoteRow

if TYPE_CHECKING:
    from ..runs import RunStore

Winner = Literal["left", "right", "tie"]
WINNERS = ("left", "right", "tie")
_SCORE = {"left": 1.0, "right": 0.0, "tie": 0.5}  # what the left configuration scored
_LIMITS = {"left": 512, "right": 512, "arena": 64, "left_run": 32,
           "right_run": 32}  # the votes table's columns
COLUMNS = ["config", "rating", "low", "high", "votes", "wins", "ties", "losses"]


class Arena:
    """Votes kept in the run store, and the leaderboards they make."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    async def vote(self, left: str, right: str, winner: str, *, arena: str = "default",
                   left_run: str | None = None, right_run: str | None = None,
                   prompt: str = "") -> str:
        """Keep one verdict; its id."""
        if winner not in WINNERS:
            raise InvalidRequest(f"'winner' is one of {', '.join(WINNERS)}.", param="winner")
        if not left or not right or left == right:
            raise InvalidRequest("A vote compares two different configurations.", param="left")
        for name, value in (("left", left), ("right", right), ("arena", arena),
                            ("left_run", left_run or ""), ("right_run", right_run or ""),
                            ("prompt", prompt)):
            # What the database could not take is the client's mistake, not an outage.
            if "\x00" in value or (name != "prompt" and len(value) > _LIMITS[name]):
                raise InvalidRequest(f"'{name}' is too long or holds a NUL character.",
                                     param=name)
        vote_id = uuid.uuid4().hex
        async with self.store.transaction("vote") as conn:
            await conn.execute(insert(VoteRow), [{
                "id": vote_id, "arena": arena or "default", "created": time.time(),
                "left": left, "right": right, "winner": winner, "left_run": left_run,
                "right_run": right_run, "prompt": prompt}])
        return vote_id

    async def votes(self, arena: str = "default") -> list[dict[str, Any]]:
        query = select(VoteRow).where(VoteRow.arena == arena).order_by(VoteRow.created)
        async with self.store.transaction("read") as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]

    async def leaderboard(self, arena: str = "default", *, resamples: int = 200) -> pd.DataFrame:
        votes = await self.votes(arena)
        return leaderboard([(v["left"], v["right"], v["winner"]) for v in votes],
                           resamples=resamples)


def bradley_terry(games: Sequence[tuple[str, str, str]], *, iterations: int = 200,
                  tolerance: float = 1e-9) -> dict[str, float]:
    """Each configuration's Bradley–Terry strength on the Elo scale (their mean is 1000).

    Every pair that met also gets one virtual tie: a configuration that never lost keeps a
    finite strength, and a handful of votes does not claim certainty.
    """
    wins: dict[str, float] = defaultdict(float)
    met: dict[tuple[str, str], float] = defaultdict(float)
    for left, right, winner in games:
        score = _SCORE[winner]
        wins[left] += score
        wins[right] += 1 - score
        met[tuple(sorted((left, right)))] += 1  # type: ignore[index]
    for pair in list(met):  # the virtual tie
        met[pair] += 1
        wins[pair[0]] += 0.5
        wins[pair[1]] += 0.5
    players = sorted(wins)
    if not players:
        return {}
    strength = dict.fromkeys(players, 1.0)
    for _ in range(iterations):
        new = {}
        for i in players:
            denominator = _denominator(i, strength, met)
            new[i] = wins[i] / denominator if denominator else strength[i]
        mean_log = sum(math.log(v) for v in new.values()) / len(new)
        new = {k: v / math.exp(mean_log) for k, v in new.items()}  # geometric mean 1
        change = max(abs(new[k] - strength[k]) for k in players)
        strength = new
        if change < tolerance:
            break
    return {k: 1000 + 400 * math.log10(v) for k, v in strength.items()}


def _denominator(player: str, strength: dict[str, float],
                 met: dict[tuple[str, str], float]) -> float:
    total = 0.0
    for (a, b), games in met.items():
        if player in (a, b):
            other = b if player == a else a
            total += games / (strength[player] + strength[other])
    return total


def leaderboard(games: Sequence[tuple[str, str, str]], *, resamples: int = 200,
                seed: int = 0) -> pd.DataFrame:
    """One row per configuration, best first: rating, its 95% interval from `resamples`
    resamplings of the votes (seeded: the same votes give the same board), and the record."""
    if not games:
        return pd.DataFrame(columns=COLUMNS)
    ratings = bradley_terry(games)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = defaultdict(list)
    for _ in range(resamples):
        drawn = bradley_terry([games[rng.randrange(len(games))] for _ in games])
        for config, rating in drawn.items():
            samples[config].append(rating)
    rows = []
    for config, rating in ratings.items():
        record = [(_SCORE[w] if config == left else 1 - _SCORE[w])
                  for left, right, w in games if config in (left, right)]
        drawn = sorted(samples[config]) or [rating]
        rows.append({
            "config": config, "rating": round(rating, 1),
            "low": round(drawn[int(0.025 * (len(drawn) - 1))], 1),
            "high": round(drawn[int(0.975 * (len(drawn) - 1))], 1),
            "votes": len(record), "wins": record.count(1.0), "ties": record.count(0.5),
            "losses": record.count(0.0),
        })
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(
        "rating", ascending=False, ignore_index=True)
