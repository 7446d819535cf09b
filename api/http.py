"""Request parsing and response plumbing shared by the generation routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from textgen import Generation, InvalidRequest, TextGenError

from .errors import error_body, validation_message
from .rendering import CompletionRenderer

Body = TypeVar("Body", bound=BaseModel)
_DONE = b"data: [DONE]\n\n"


async def parse_body(request: Request, model: type[Body]) -> Body:
    """Parse JSON ourselves: faster than FastAPI's body machinery, and every failure is a 400."""
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send valid JSON with "
            "'Content-Type: application/json'."
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(exc)
        raise InvalidRequest(message, param=param) from None


def cache_control(header: str | None) -> tuple[bool, bool]:
    """(read the cache, write the cache) from a request's Cache-Control header."""
    if not header:
        return True, True
    directives = {d.strip().lower() for d in header.split(",")}
    return "no-cache" not in directives, "no-store" not in directives


def generation_headers(generation: Generation) -> dict[str, str]:
    headers = {"X-Cache": generation.cache_status, "X-Request-Id": generation.id}
    rate = generation.rate
    if rate is not None and not rate.unlimited:
        headers["x-ratelimit-limit-requests"] = str(rate.limit)
        headers["x-ratelimit-remaining-requests"] = str(rate.remaining)
        headers["x-ratelimit-reset-requests"] = f"{rate.reset_after:.3f}s"
    return headers


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def sse_events(generation: Generation, renderer: CompletionRenderer,
                     include_usage: bool) -> AsyncIterator[bytes]:
    """OpenAI's server-sent events; an error mid-stream is a data event, then [DONE]."""
    events = generation.events()
    try:
        async with contextlib.aclosing(events):
            async for delta in events:
                yield _sse(renderer.chunk(delta, include_usage))
        if include_usage:
            yield _sse(renderer.usage_chunk(generation.usage))
    except TextGenError as exc:
        yield b"data: " + error_body(exc) + b"\n\n"
    yield _DONE


def stream_response(generation: Generation, renderer: CompletionRenderer,
                    include_usage: bool) -> StreamingResponse:
    return StreamingResponse(
        sse_events(generation, renderer, include_usage),
        media_type="text/event-stream",
        headers={**generation_headers(generation), "Cache-Control": "no-cache"},
    )


async def json_response(request: Request, generation: Generation,
                        render: Callable[[Any], dict[str, Any]]) -> Response:
    """Run a generation to its end; abort it in the engine if the client goes away first."""
    if generation.cache_status == "HIT":
        completion = await generation.result()
    else:
        try:
            completion = await _until_disconnect(request, generation.result())
        except _ClientLeft:
            # Nobody reads this answer; returning one (nginx's 499) instead of raising keeps
            # an ordinary hang-up out of the server's error log.
            return Response(status_code=499)
    return Response(orjson.dumps(render(completion)),
                    headers=generation_headers(generation), media_type="application/json")


class _ClientLeft(Exception):
    pass


async def _until_disconnect(request: Request, work: Any) -> Any:
    # The work runs in this task; one watcher cancels it if the client leaves (the stream's
    # close then aborts the engine's work). One task per request, not two and a wait().
    this = asyncio.current_task()
    assert this is not None
    left = False

    def on_watcher_done(watcher: asyncio.Future[None]) -> None:
        nonlocal left
        if not watcher.cancelled():
            left = True
            this.cancel()

    watcher = asyncio.ensure_future(_disconnected(request))
    watcher.add_done_callback(on_watcher_done)
    try:
        return await work
    except asyncio.CancelledError:
        if not left:
            raise
        this.uncancel()  # our own cancellation, spent: the task goes on to answer
        raise _ClientLeft from None
    finally:
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
