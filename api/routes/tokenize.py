"""POST /tokenize and /detokenize, and Anthropic's /v1/messages/count_tokens, as vLLM's server has
them, by the model's engine (no cache, no limit: nothing is generated)."""

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


@router.post("/v1/messages/count_tokens",
             summary="Count a message request's input tokens (Anthropic's, vLLM's)")
async def count_tokens(request: Request, textgen: AuthorizedTextGenDep) -> dict[str, Any]:
    return await textgen.tokenize("/v1/messages/count_tokens", (await read_json(request))[0])
