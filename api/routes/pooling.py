"""vLLM's pooling routes, for models it serves as pooling models (`--runner pooling`):
embeddings (OpenAI's and Cohere's), pooling, score, rerank and classify, under the paths and
aliases vLLM's server has.

The body goes to the model's engine as sent, through the same door as a completion: the cache
(an embedding is the same every time, so every answer is kept), the limits, single flight,
the metrics and the run store apply. A model that does not serve a route answers 404, as
vLLM's server does (it registers only the routes its model serves).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..deps import AuthorizedTextGenDep
from .completions import respond

router = APIRouter(tags=["pooling"])


@router.post("/v1/embeddings", summary="Create embeddings (OpenAI-compatible)")
async def create_embeddings(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    return await respond(request, textgen, "embeddings")


@router.post("/v2/embed", summary="Create embeddings (Cohere's v2 embed API, vLLM's)")
async def create_cohere_embeddings(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    return await respond(request, textgen, "cohere_embed")


@router.post("/pooling", summary="Pool hidden states (vLLM's extension)")
async def create_pooling(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    return await respond(request, textgen, "pooling")


@router.post("/score", summary="Score text pairs (vLLM's extension)")
@router.post("/v1/score", include_in_schema=False)
async def create_score(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    return await respond(request, textgen, "score")


@router.post("/rerank", summary="Rerank documents for a query (Jina/Cohere style, vLLM's)")
@router.post("/v1/rerank", include_in_schema=False)
@router.post("/v2/rerank", include_in_schema=False)
async def create_rerank(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    return await respond(request, textgen, "rerank")


@router.post("/classify", summary="Classify texts (vLLM's extension)")
async def create_classify(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    return await respond(request, textgen, "classify")
