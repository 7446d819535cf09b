"""The lab's kept runs: GET /lab/runs (filtered, newest first), GET and DELETE /lab/runs/{id},
POST /lab/runs/{id}/rerun (the same request, fresh, kept as a new run) and
GET /lab/runs/{a}/diff/{b} (settings, input and output side by side)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from textgen.errors import RunNotFound
from textgen.runs import diff

from ..deps import Authorized, TextGenDep
from ..protocol import Run, RunList

router = APIRouter(dependencies=[Authorized], tags=["runs"])


@router.get("/lab/runs", response_model=RunList, summary="Kept runs, newest first")
async def list_runs(
    textgen: TextGenDep,
    model: Annotated[str | None, Query(description="Only this model's runs.")] = None,
    mode: Annotated[str | None, Query(description="api, playground, chat, compare, sweep...")] = None,
    text: Annotated[str | None, Query(description="A text in the request or the reply.")] = None,
    experiment: Annotated[str | None, Query(description="Only this experiment's runs.")] = None,
    before: Annotated[float | None, Query(description="Created before this time (epoch seconds): "
                                          "the next page starts at the last run's `created`.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> RunList:
    records = await textgen.runs.runs(model=model, mode=mode, text=text, experiment=experiment,
                                      before=before, limit=limit)
    return RunList(data=[Run.model_validate(r, from_attributes=True) for r in records])


@router.get("/lab/runs/{run_id}", response_model=Run, summary="One kept run")
async def get_run(run_id: str, textgen: TextGenDep) -> Run:
    return Run.model_validate(await textgen.runs.get(run_id), from_attributes=True)


@router.delete("/lab/runs/{run_id}", summary="Delete a kept run")
async def delete_run(run_id: str, textgen: TextGenDep) -> dict[str, object]:
    if not await textgen.runs.delete([run_id]):
        raise RunNotFound(f"No run with id '{run_id}'.")
    return {"id": run_id, "object": "run", "deleted": True}


@router.post("/lab/runs/{run_id}/rerun", response_model=Run,
             summary="Send a kept run's request again, fresh; the new run")
async def rerun(run_id: str, textgen: TextGenDep) -> Run:
    return Run.model_validate(await textgen.rerun(run_id), from_attributes=True)


@router.get("/lab/runs/{a}/diff/{b}", summary="Two kept runs side by side")
async def diff_runs(a: str, b: str, textgen: TextGenDep) -> dict[str, object]:
    """The settings that differ (the model first), whether the input is the same, and the
    outputs as stretches that are the same or differ, token by token when the runs kept
    their logprobs, word by word otherwise."""
    return diff(await textgen.runs.get(a), await textgen.runs.get(b)).to_json()
