"""POST /v1/completions and /v1/chat/completions: one pipeline, two schemas."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from textgen import TextGen

from ..deps import AuthorizedTextGenDep
from ..http import cache_control, json_response, parse_body, stream_response
from ..protocol import ChatCompletionRequest, CompletionRequest
from ..rendering import ChatRenderer, CompletionRenderer

# Every route here takes AuthorizedTextGenDep: the token check and the TextGen in one dependency.
router = APIRouter(tags=["completions"])


async def _generate(request: Request, textgen: TextGen,
                    schema: type[CompletionRequest] | type[ChatCompletionRequest],
                    renderer_type: type[CompletionRenderer]) -> Response:
    body = await parse_body(request, schema)
    read, write = cache_control(request.headers.get("cache-control"))
    generation = await textgen.open(body.to_generation_request(read_cache=read, write_cache=write))
    renderer = renderer_type(generation)
    if body.stream:
        return stream_response(generation, renderer, body.include_usage)
    return await json_response(request, generation, renderer.response)


@router.post("/v1/completions", summary="Create a completion (OpenAI-compatible)")
async def create_completion(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    return await _generate(request, textgen, CompletionRequest, CompletionRenderer)


@router.post("/v1/chat/completions", summary="Create a chat completion (OpenAI-compatible)")
async def create_chat_completion(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    return await _generate(request, textgen, ChatCompletionRequest, ChatRenderer)
