"""GET /v1/models, GET /v1/models/{model_id}, POST /v1/models/{model_id}/load|unload (the
last two need the admin token when ADMIN_TOKEN is set)."""

from __future__ import annotations

from fastapi import APIRouter

from textgen import ModelInfo

from ..deps import AdminTextGenDep, AuthorizedTextGenDep
from ..protocol import ModelCard, ModelList, ModelStatus

router = APIRouter(tags=["models"])


def _status(info: ModelInfo) -> ModelStatus:
    return ModelStatus.model_validate(info)


@router.get("/v1/models", response_model=ModelList, response_model_exclude_none=True,
            summary="List the models")
async def list_models(textgen: AuthorizedTextGenDep) -> ModelList:
    return ModelList(
        data=[ModelCard(id=m.id, created=m.created, owned_by=m.owned_by, root=m.root,
                        parent=m.parent) for m in textgen.list_models()]
    )


@router.post("/v1/models/{model_id:path}/load", response_model=ModelStatus, summary="Load a model")
async def load_model(model_id: str, textgen: AdminTextGenDep) -> ModelStatus:
    return _status(await textgen.load(model_id))


@router.post("/v1/models/{model_id:path}/unload", response_model=ModelStatus, summary="Unload a model")
async def unload_model(model_id: str, textgen: AdminTextGenDep) -> ModelStatus:
    return _status(await textgen.unload(model_id))


@router.get("/v1/models/{model_id:path}", response_model=ModelStatus, summary="One model's status")
async def get_model(model_id: str, textgen: AuthorizedTextGenDep) -> ModelStatus:
    return _status(textgen.model_info(model_id))
