"""Blind pairwise votes and the leaderboards they make (textgen.experiments.arena):
POST /lab/arena/votes, GET /lab/arena/votes, GET /lab/arena/leaderboard."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ..deps import Authorized, TextGenDep

router = APIRouter(dependencies=[Authorized], tags=["arena"])
ArenaName = Annotated[str, Query(description="Which leaderboard.", max_length=64)]


class VoteBody(BaseModel):
    left: str = Field(description="The configuration whose answer was shown on the left.")
    right: str = Field(description="The configuration whose answer was shown on the right.")
    winner: str = Field(description="left, right or tie.")
    arena: str = Field("default", max_length=64)
    left_run: str | None = Field(None, description="The kept run of the left answer.")
    right_run: str | None = None
    prompt: str = ""


@router.post("/lab/arena/votes", summary="Keep a blind comparison's verdict")
async def vote(body: VoteBody, textgen: TextGenDep) -> dict[str, Any]:
    vote_id = await textgen.arena.vote(
        body.left, body.right, body.winner, arena=body.arena, left_run=body.left_run,
        right_run=body.right_run, prompt=body.prompt)
    return {"id": vote_id, "object": "arena.vote"}


@router.get("/lab/arena/votes", summary="An arena's votes, oldest first")
async def votes(textgen: TextGenDep, arena: ArenaName = "default") -> dict[str, Any]:
    return {"object": "list", "data": await textgen.arena.votes(arena)}


@router.get("/lab/arena/leaderboard", summary="The configurations ranked from the votes")
async def leaderboard(textgen: TextGenDep, arena: ArenaName = "default") -> dict[str, Any]:
    """Bradley–Terry ratings on the Elo scale with 95% intervals, best first."""
    board = await textgen.arena.leaderboard(arena)
    return {"object": "list", "arena": arena, "data": board.to_dict(orient="records")}
