"""POST /v1/completions and /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..deps import AuthorizedTextGenDep
from ..http import cache_control, json_response, parse_body, stream_response
from ..protocol import ChatCompletionRequest, CompletionRequest
from ..rendering import ChatRenderer, CompletionRenderer

# Every route here takes AuthorizedTextGenDep: the token check and the TextGen in one dependency.
router = APIRouter(tags=["completions"])


@router.post("/v1/completions", summary="Create a completion (OpenAI-compatible)")
async def create_completion(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    body = await parse_body(request, CompletionRequest)
    read, write = cache_control(request.headers.get("cache-control"))
    generation = await textgen.open(body.to_generation_request(read_cache=read, write_cache=write))
    renderer = CompletionRenderer(generation)
    if body.stream:
        return stream_response(generation, renderer, body.include_usage)
    return await json_response(request, generation, renderer.response)


@router.post("/v1/chat/completions", summary="Create a chat completion (OpenAI-compatible)")
async def create_chat_completion(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    body = await parse_body(request, ChatCompletionRequest)
    read, write = cache_control(request.headers.get("cache-control"))
    generation = await textgen.open(body.to_generation_request(read_cache=read, write_cache=write))
    renderer = ChatRenderer(generation)
    if body.stream:
        return stream_response(generation, renderer, body.include_usage)
    return await json_response(request, generation, renderer.response)
