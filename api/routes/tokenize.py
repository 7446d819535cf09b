"""POST /tokenize and /detokenize, as vLLM's server has them, by the model's engine."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..deps import AuthorizedTextGenDep
from ..http import read_json

router = APIRouter(tags=["tokenize"])


@router.post("/tokenize", summary="Tokenize a prompt or chat messages (vLLM's extension)")
async def tokenize(request: Request, textgen: AuthorizedTextGenDep) -> dict[str, Any]:
    return await textgen.tokenize("/tokenize", (await read_json(request))[0])


@router.post("/detokenize", summary="Turn token ids back into text (vLLM's extension)")
async def detokenize(request: Request, textgen: AuthorizedTextGenDep) -> dict[str, Any]:
    return await textgen.tokenize("/detokenize", (await read_json(request))[0])
