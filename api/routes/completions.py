"""POST /v1/completions and /v1/chat/completions: the client's body into TextGen, as sent."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from textgen import Generation, OpenAIRequest, TextGen
from textgen.request import Route

from ..deps import AuthorizedTextGenDep
from ..http import (
    ClientLeft,
    cache_control,
    json_response,
    read_json,
    recorded_as,
    stream_response,
    until_disconnect,
)
from ..request_ids import request_id

# Every route here takes AuthorizedTextGenDep: the token check and the TextGen in one dependency.
router = APIRouter(tags=["completions"])


async def _generate(request: Request, textgen: TextGen, endpoint: Route) -> Response:
    body, size = await read_json(request)
    read, write = cache_control(request.headers.get("cache-control"))
    # The id RequestIdMiddleware chose and echoes: the engine (and an upstream) get the same.
    openai_request = OpenAIRequest(endpoint, body, read_cache=read, write_cache=write,
                                   request_id=request_id(request), size=size,
                                   record=recorded_as(request))
    try:
        # A plain request runs to its end here; a stream is admitted and starts here.
        generation = await until_disconnect(request, textgen.open(openai_request))
    except ClientLeft as left:
        if isinstance(left.result, Generation):
            await left.result.aclose()  # a stream admitted as the client left: end it now
        # Nobody reads this answer; returning one (nginx's 499) instead of raising keeps an
        # ordinary hang-up out of the server's error log.
        return Response(status_code=499)
    if generation.stream:
        return stream_response(generation)
    return json_response(generation)


@router.post("/v1/completions", summary="Create a completion (OpenAI-compatible)")
async def create_completion(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    return await _generate(request, textgen, "completions")


@router.post("/v1/chat/completions", summary="Create a chat completion (OpenAI-compatible)")
async def create_chat_completion(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    return await _generate(request, textgen, "chat")
