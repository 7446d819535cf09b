"""Request parsing and response plumbing shared by the generation routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from textgen import (
    Generation,
    InvalidRequest,
    RequestTooLarge,
    TextGenError,
    binary_pooling,
    jsoncodec,
)
from textgen.request import Route

from .errors import anthropic_error, error_body, status_of

T = TypeVar("T")
_DONE = b"data: [DONE]\n\n"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with a 413 as soon as it is known to pass `limit` bytes."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:  # a chunked body, or a wrong content-length
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"The request body is larger than this lab accepts ({limit} bytes, "
                           "MAX_REQUEST_BYTES).")


async def read_json(request: Request) -> tuple[dict[str, Any], int]:
    """The JSON object of a request body and its size; every failure to read one is a 4xx."""
    raw = await read_body(request, request.app.state.settings.MAX_REQUEST_BYTES)
    try:
        data = await jsoncodec.loads_off_loop(raw)
    except jsoncodec.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send valid JSON with "
            "'Content-Type: application/json'."
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return data, len(raw)


def cache_control(header: str | None) -> tuple[bool, bool]:
    """(read the cache, write the cache) from a request's Cache-Control header."""
    if not header:
        return True, True
    directives = {d.strip().lower() for d in header.split(",")}
    return "no-cache" not in directives, "no-store" not in directives


def recorded_as(request: Request) -> str | None:
    """"api" when the request is to be kept in the run store: it sends `X-Lab-Record: 1`
    (or true/yes), or RECORD_API_REQUESTS keeps every one; `X-Lab-Record: 0` opts out then."""
    header = request.headers.get("x-lab-record")
    if header is not None:
        return "api" if header.strip().lower() in ("1", "true", "yes", "on") else None
    return "api" if request.app.state.settings.RECORD_API_REQUESTS else None


def generation_headers(generation: Generation) -> dict[str, str]:
    # X-Request-Id is RequestIdMiddleware's, on every response (api/request_ids.py).
    headers = {"X-Cache": generation.cache_status}
    rate = generation.rate
    if rate is not None and not rate.unlimited:
        headers["x-ratelimit-limit-requests"] = str(rate.limit)
        headers["x-ratelimit-remaining-requests"] = str(max(rate.remaining, 0))
        headers["x-ratelimit-reset-requests"] = f"{rate.reset_after:.3f}s"
    return headers


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + jsoncodec.dumps(payload) + b"\n\n"


def _typed_event(payload: dict[str, Any]) -> bytes:
    kind = str(payload.get("type") or "message").encode()
    return b"event: " + kind + b"\ndata: " + jsoncodec.dumps(payload) + b"\n\n"


async def sse_events(generation: Generation) -> AsyncIterator[bytes]:
    """OpenAI's server-sent events; an error mid-stream is a data event, then [DONE].

    The Responses and Messages routes stream typed events instead (`event: <type>` before
    each data line, no [DONE]); an error mid-stream is their `error` event, in the shape each
    API's clients read (`_error_event`).
    """
    evented = generation.request.evented
    chunks = generation.chunks()
    last: dict[str, Any] = {}
    try:
        async for chunk in chunks:
            last = chunk
            yield _typed_event(chunk) if evented else _sse(chunk)
    except TextGenError as exc:
        if evented:
            yield _typed_event(_error_event(generation.request.endpoint, exc, last))
        else:
            yield b"data: " + error_body(exc) + b"\n\n"
    finally:
        await chunks.aclose()
    if not evented:
        yield _DONE


def _error_event(route: Route, exc: TextGenError, last: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's `error` event holds its error object; OpenAI's Responses `error` event is
    flat (`ResponseErrorEvent`: code, message, param) and numbered after the last event."""
    if route == "messages":
        return {"type": "error", "error": anthropic_error(status_of(exc)[0], exc.message)}
    sequence = last.get("sequence_number")
    return {"type": "error", "code": exc.code, "message": exc.message, "param": exc.param,
            "sequence_number": sequence + 1 if isinstance(sequence, int) else 0}


class _GenerationStream(StreamingResponse):
    """A stream that ends its generation however it ends: read to the end, cut by the client,
    or never started (a client that left between the headers and the first chunk)."""

    def __init__(self, generation: Generation, headers: dict[str, str]) -> None:
        super().__init__(sse_events(generation), media_type="text/event-stream",
                         headers={**headers, "Cache-Control": "no-cache"})
        self._generation = generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._generation.aclose()


def stream_response(generation: Generation) -> StreamingResponse:
    return _GenerationStream(generation, generation_headers(generation))


def json_response(generation: Generation) -> Response:
    assert generation.response is not None
    request = generation.request
    if binary_pooling.asks_binary(request):
        content, headers = binary_pooling.parts_of(generation.response,
                                                   request.body.get("encoding_format"))
        return Response(content, headers={**generation_headers(generation), **headers},
                        media_type="application/octet-stream")
    return Response(jsoncodec.dumps(generation.response), headers=generation_headers(generation),
                    media_type="application/json")


class ClientLeft(Exception):
    """The client hung up before its answer was ready (`result`: what was ready anyway)."""

    def __init__(self, result: Any = None) -> None:
        super().__init__("the client left")
        self.result = result


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work` in this task; cancel it if the client leaves first (raises ClientLeft).

    One watcher task per request, not two and a wait(). The cancellation reaches the engine,
    which aborts the request.
    """
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
        result = await work
    except asyncio.CancelledError:
        if not left:
            raise
        this.uncancel()  # our own cancellation, spent: the task goes on to answer
        raise ClientLeft from None
    finally:
        watcher.cancel()
    if left:  # the work swallowed our cancellation and finished anyway
        this.uncancel()
        raise ClientLeft(result)
    return result


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
