"""The lab's evaluations over HTTP (textgen.experiments): create, list, status with the summary,
per-item results (JSON, CSV, JSON Lines, Parquet), cancel, delete."""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from textgen.experiments import Config, EvaluationSpec, datasets, grid
from textgen.experiments.evaluation import shown

from ..deps import Authorized, TextGenDep

router = APIRouter(dependencies=[Authorized], tags=["evaluations"])


class ConfigBody(BaseModel):
    model: str
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="Request fields: temperature, max_tokens, ...")
    system: str | None = None
    name: str = ""


class GridBody(BaseModel):
    """Every combination of models × each setting's values × system prompts."""

    models: list[str] = Field(min_length=1)
    settings: dict[str, list[Any]] = Field(default_factory=dict)
    systems: list[str | None] = Field(default_factory=lambda: [None])


class DatasetBody(BaseModel):
    """One of: a `.jsonl`/`.csv` file on the lab's machine, the text of one, or an lm-eval task."""

    path: str | None = None
    jsonl: str | None = None
    csv: str | None = None
    lm_eval_task: str | None = None
    include_path: str | None = Field(None, description="A folder of lm-eval task YAMLs.")


class EvaluationCreate(BaseModel):
    name: str = ""
    dataset: DatasetBody
    configs: list[ConfigBody] = Field(default_factory=list)
    grid: GridBody | None = None
    scorer: str | dict[str, Any] = Field(
        "exact_match", description="exact_match, contains, json_valid, choice; or "
        '{"name": "regex", "pattern": ...}, {"name": "json_schema", "schema": {...}}')
    route: Literal["chat", "completions"] = "chat"
    concurrency: int = Field(4, ge=1, le=256)
    max_tokens: int = Field(64, ge=1)


def _spec(body: EvaluationCreate) -> EvaluationSpec:
    configs = [Config(**c.model_dump()) for c in body.configs]
    if body.grid is not None:
        configs += grid(body.grid.models, body.grid.settings, body.grid.systems)
    given = body.dataset
    items = None
    if given.path:
        items = datasets.load(given.path)
    elif given.jsonl:
        items = datasets.parse(given.jsonl, "jsonl")
    elif given.csv:
        items = datasets.parse(given.csv, "csv")
    return EvaluationSpec(configs=configs, items=items, lm_eval_task=given.lm_eval_task,
                          lm_eval_include_path=given.include_path, scorer=body.scorer,
                          route=body.route, concurrency=body.concurrency,
                          max_tokens=body.max_tokens, name=body.name)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")  # type: ignore[return-value]


@router.post("/lab/evaluations", status_code=202, summary="Start an evaluation")
async def create(body: EvaluationCreate, textgen: TextGenDep) -> dict[str, Any]:
    experiment = await textgen.evaluations.start(_spec(body))
    return {"id": experiment, "object": "evaluation", "status": "running"}


@router.get("/lab/evaluations", summary="Evaluations, newest first")
async def list_evaluations(textgen: TextGenDep,
                           limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    rows = await textgen.runs.experiments(kind="evaluation", limit=limit)
    return {"object": "list", "data": [
        {**shown(r), "object": "evaluation"} for r in rows]}


@router.get("/lab/evaluations/{experiment}", summary="An evaluation's state and summary")
async def status(experiment: str, textgen: TextGenDep) -> dict[str, Any]:
    state = await textgen.evaluations.status(experiment)
    results = await textgen.evaluations.results(experiment)
    return {**state, "object": "evaluation", "summary": _records(results.summary)}


@router.get("/lab/evaluations/{experiment}/items", summary="Per-item results")
async def items(experiment: str, textgen: TextGenDep,
                format: Literal["json", "csv", "jsonl", "parquet"] = "json") -> Response:
    frame = (await textgen.evaluations.results(experiment)).items
    if format == "csv":
        return Response(frame.to_csv(index=False), media_type="text/csv")
    if format == "jsonl":
        return Response(frame.to_json(orient="records", lines=True),
                        media_type="application/jsonl")
    if format == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return Response(buffer.getvalue(), media_type="application/vnd.apache.parquet")
    return JSONResponse({"object": "list", "data": _records(frame)})


@router.post("/lab/evaluations/{experiment}/cancel", summary="Cancel an evaluation")
async def cancel(experiment: str, textgen: TextGenDep) -> dict[str, Any]:
    await textgen.evaluations.cancel(experiment)
    return {**await textgen.evaluations.status(experiment), "object": "evaluation"}


@router.delete("/lab/evaluations/{experiment}", summary="Delete an evaluation and its runs")
async def delete(experiment: str, textgen: TextGenDep) -> dict[str, Any]:
    await textgen.evaluations.cancel(experiment)
    await textgen.runs.delete_experiment(experiment)
    return {"id": experiment, "object": "evaluation", "deleted": True}
