"""Reading an upstream's server-sent event stream: its `data:` payloads, then its chunks.

A remote vLLM server streams a generation as SSE, one JSON chunk per event and `[DONE]` last
(Responses and Messages: typed events, the last one closing the answer).
`sse_data` splits the body into payloads as the bytes arrive; `UpstreamChunks` turns them into
the chunks the pipeline passes on, and a stream that ends early, sends garbage or an error
event into a typed error. A stream without `[DONE]` is an error: the server went away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from .. import events
from ..errors import BackendUnavailable, TextGenError
from ..request import Route
from .remote_errors import stream_error, transport_error


async def sse_data(response: httpx.Response) -> AsyncIterator[bytes]:
    """The `data:` payloads of a server-sent event stream, as they arrive."""
    rest = b""
    # The body as the transport hands it over: we ask for no content-encoding, and httpx's
    # decoding and re-chunking layers cost more than the parsing here.
    stream: Any = response.stream
    async for piece in stream:
        buffer = rest + piece if rest else piece
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            event, start = buffer[start:end], end + 2
            if event.startswith(b"data: ") and b"\n" not in event:
                yield event[6:]  # vLLM's every event: one data line
                continue
            data = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
            if data:
                yield b"\n".join(data)
        rest = buffer[start:]
    # Whatever is left is an event cut short: the caller sees a stream without [DONE].


class UpstreamChunks:
    """The chunks of an upstream event stream, read as they arrive.

    A class rather than a generator so that `aclose()` closes the upstream response even when
    nobody started reading it (a client that left before the first chunk). `failed` is the
    server's: it notes a failure of the server (health, metrics) and hands the error back to
    raise; `closed` is called once, when the stream ends for whatever reason.
    """

    def __init__(
        self,
        response: httpx.Response,
        url: str,
        *,
        failed: Callable[[TextGenError], TextGenError],
        closed: Callable[[UpstreamChunks], None],
        events_of: Route | None = None,
    ) -> None:
        """`events_of`: the route (Responses, Messages) whose typed events the stream holds:
        such a stream ends with its closing event instead of [DONE]."""
        self._response = response
        self._events_of = events_of
        self._url = url
        self._failed = failed
        self._on_closed = closed
        self._events = sse_data(response)
        self._done = False
        self._closed = False
        self._interrupted: TextGenError | None = None

    def __aiter__(self) -> UpstreamChunks:
        return self

    async def __anext__(self) -> dict[str, Any]:
        url = self._url
        while True:
            if self._interrupted is not None:
                await self.aclose()
                raise self._interrupted
            try:
                data = await anext(self._events)
            except StopAsyncIteration:
                await self.aclose()
                if self._done:
                    raise
                raise self._failed(
                    BackendUnavailable(f"The backend {url} ended the stream before it finished.")
                ) from None
            except httpx.HTTPError as exc:
                await self.aclose()
                if self._interrupted is not None:
                    raise self._interrupted from None
                raise self._failed(transport_error(url, exc)) from exc
            if data == b"[DONE]":
                # Read on to the end of the body: a response read to its end puts its
                # connection back in the pool for the next request.
                self._done = True
                continue
            if self._done:
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                chunk = None
            if not isinstance(chunk, dict):
                await self.aclose()
                raise self._failed(
                    BackendUnavailable(f"The backend {url} sent a chunk we could not read.")
                )
            if self._events_of is not None:
                if events.is_error(chunk):
                    await self.aclose()
                    raise self._failed(stream_error(url, chunk))
                if events.is_last(self._events_of, chunk):
                    self._done = True  # read on to the end of the body, as after [DONE]
                return chunk
            if "choices" not in chunk and ("error" in chunk or "message" in chunk):
                await self.aclose()
                raise self._failed(stream_error(url, chunk))
            return chunk

    async def interrupt(self, error: TextGenError) -> None:
        """End the stream with `error`: its reader gets it at its next chunk."""
        self._interrupted = error
        await self._response.aclose()  # wakes a reader waiting on the connection

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._events.aclose()
            await self._response.aclose()
        finally:
            self._on_closed(self)
