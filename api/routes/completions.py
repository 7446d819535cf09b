"""POST /v1/completions, /v1/chat/completions, /v1/responses (OpenAI's Responses) and /v1/messages
(Anthropic's Messages): the client's body into TextGen, as sent.

`respond` is the door of every route whose body goes to an engine as sent (routes/pooling.py
too): the cache, the limits, single flight and the metrics apply the same way.
"""

from __future__ import annotations

from typing import Any

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


async def respond(request: Request, textgen: TextGen, endpoint: Route) -> Response:
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
    return await respond(request, textgen, "completions")


@router.post("/v1/chat/completions", summary="Create a chat completion (OpenAI-compatible)")
async def create_chat_completion(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    return await respond(request, textgen, "chat")


@router.post("/v1/responses", summary="Create a model response (OpenAI's Responses API, vLLM's)")
async def create_response(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    return await respond(request, textgen, "responses")


@router.post("/v1/messages", summary="Create a message (Anthropic's Messages API, vLLM's)")
async def create_message(request: Request, textgen: AuthorizedTextGenDep) -> Response:
    return await respond(request, textgen, "messages")


@router.get("/v1/responses/{response_id}", summary="Retrieve a stored response (vLLM's store)")
async def retrieve_response(response_id: str, textgen: AuthorizedTextGenDep) -> dict[str, Any]:
    return await textgen.stored_response(response_id)


@router.post("/v1/responses/{response_id}/cancel",
             summary="Cancel a stored response in the background (vLLM's store)")
async def cancel_response(response_id: str, textgen: AuthorizedTextGenDep) -> dict[str, Any]:
    return await textgen.stored_response(response_id, cancel=True)
