"""A remote OpenAI-compatible vLLM server, reached over one pooled `httpx.AsyncClient`.

The client's body goes upstream as it was sent, so every field the upstream understands works
through the lab; the one change is `stream_options.include_usage` on streams (token counts are
the server's own; the usage chunk is dropped on the way out when the client did not ask for it).
Chunks are passed on as they arrive. Closing a stream closes the upstream response, and vLLM
aborts a request whose connection is gone. Failures become typed errors:

    connection refused, connect timeout, upstream 503   BackendDown (503)
    no answer within the read timeout                   BackendTimeout (504)
    garbage, an upstream 5xx, a stream cut short        BackendUnavailable (502)
    upstream 4xx / 501                                  the same status, with its message
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from ..catalog import CATALOG_BY_ID, ModelSpec
from ..errors import (
    BackendDown,
    BackendTimeout,
    BackendUnavailable,
    EngineOverloaded,
    ModelNotFound,
    TextGenError,
)
from ..request import PATHS, OpenAIRequest
from .base import EngineReply
from .errors import rejection
from .http11 import Http11Transport

log = logging.getLogger(__name__)

_API_SUFFIXES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1")
_ERROR_BODY_LIMIT = 64 * 1024


def base_url(endpoint: str) -> str:
    """`http://vllm:8000/v1/completions` (the seed's form), `.../v1` or a bare base URL -> base."""
    url = endpoint.strip().rstrip("/")
    for suffix in _API_SUFFIXES:
        if url.endswith(suffix):
            url = url[: -len(suffix)]
            break
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL of a vLLM server: {endpoint!r}")
    return url


_SIZE = re.compile(r"(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?![a-z])", re.IGNORECASE)
_INSTRUCT = re.compile(r"instruct|chat|(?:^|[-_])it(?:$|[-_])", re.IGNORECASE)


def guess_spec(model_id: str, owned_by: str | None = None) -> ModelSpec:
    """A catalog entry for a model only a backend knows: size class guessed from its name."""
    known = CATALOG_BY_ID.get(model_id)
    if known is not None:
        return known
    name = model_id.rsplit("/", 1)[-1]
    params = 7.0  # the seed's smallest class, when the name says nothing
    match = _SIZE.search(name)
    if match is not None:
        experts, size, unit = match.groups()
        params = float(size) * (int(experts) if experts else 1) / (1000 if unit in "mM" else 1)
    owner = model_id.split("/", 1)[0] if "/" in model_id else (owned_by or "remote")
    return ModelSpec(model_id, params, instruct=bool(_INSTRUCT.search(name)), owned_by=owner)


class RemoteEngine:
    """One remote vLLM server and the models it serves; `kind` is "remote"."""

    kind = "remote"

    def __init__(
        self,
        endpoint: str,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 60.0,
        request_timeout: float = 600.0,
        max_connections: int = 256,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = base_url(endpoint)
        # Up or down as last seen (None until the first call); read by /health and discovery.
        self.up: bool | None = None
        self.last_error: str | None = None
        self.models: tuple[str, ...] = ()
        self.model_roots: dict[str, str] = {}
        # Called on every failure of the backend itself (not on the client's own 4xx).
        self.on_failure: Callable[[RemoteEngine, TextGenError], None] | None = None
        self._in_flight = 0
        self._closed = False
        # One client per backend: its pool keeps connections alive between requests.
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=read_timeout)
        self._transport = transport or Http11Transport(max_connections=max_connections)
        self._client = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, transport=self._transport
        )
        # Generation requests go to the client's transport (its pool) directly, with URLs and
        # headers built once here: the client's per-request layers (URL merging, cookies,
        # auth, redirects) cost about 0.3 ms of CPU per request on the 2-core dev machine.
        self._timeouts = timeout.as_dict()
        # A plain request's answer comes in one piece when the generation ends: the wait for
        # it is bounded by the whole request's time, not by the gap between stream chunks.
        self._plain_timeouts = {**self._timeouts, "read": request_timeout}
        self._paths = {endpoint: httpx.URL(self.url + path) for endpoint, path in PATHS.items()}
        self._headers = [
            (b"host", httpx.URL(self.url).netloc),
            (b"content-type", b"application/json"),
        ]

    def __repr__(self) -> str:
        return f"RemoteEngine({self.url!r})"

    def in_flight(self) -> int:
        """Generation requests sent upstream and not yet answered (streams not yet closed)."""
        return self._in_flight

    # --- discovery ------------------------------------------------------------------------

    async def list_models(self) -> list[dict[str, Any]]:
        """The upstream's `/v1/models` entries; raises a backend error if it cannot say."""
        try:
            response = await self._client.get("/v1/models")
        except httpx.HTTPError as exc:
            raise self._failed(_transport_error(self.url, exc)) from exc
        if response.status_code != 200:
            raise self._failed(_status_error(self.url, response.status_code, response.content))
        try:
            data = orjson.loads(response.content)["data"]
            models = [m for m in data if isinstance(m["id"], str)]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise self._failed(
                BackendUnavailable(f"The backend {self.url} answered /v1/models with garbage.")
            ) from exc
        self.models = tuple(m["id"] for m in models)
        # What identifies the weights behind each model (part of the cache key): vLLM's
        # model card names the folder it loaded (`root`) and its context length.
        self.model_roots = {m["id"]: f"{m.get('root') or ''}|{m.get('max_model_len') or ''}"
                            for m in models}
        self.up, self.last_error = True, None
        return models

    # --- generation -----------------------------------------------------------------------

    async def generate(self, request: OpenAIRequest, request_id: str) -> EngineReply:
        body = request.body
        if request.stream:
            options = body.get("stream_options")
            options = options if isinstance(options, dict) else {}
            body = {**body, "stream_options": {**options, "include_usage": True}}
        self._in_flight += 1
        streaming = False  # once the chunks are handed over, closing them ends the request
        try:
            response = await self._post(self._paths[request.endpoint], body, request_id,
                                        stream=request.stream)
            if not request.stream:
                return EngineReply(response=await self._json(response))
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                await response.aclose()
                raise self._failed(
                    BackendUnavailable(
                        f"The backend {self.url} answered a streaming request without an event "
                        "stream."
                    )
                )
            streaming = True
            return EngineReply(chunks=_UpstreamChunks(self, response))
        finally:
            if not streaming:
                self._in_flight -= 1

    async def tokenize(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._post(httpx.URL(self.url + path), body, None, stream=False)
        return await self._json(response)

    def weights(self, model: str) -> str:
        """The server and what it says of the model: its folder (`root`) and context length."""
        return f"{self.url}|{self.model_roots.get(model, '')}"

    async def _post(self, url: httpx.URL, body: dict[str, Any], request_id: str | None, *,
                    stream: bool) -> httpx.Response:
        """Send a JSON body; a non-200 answer becomes the typed error for its status."""
        content = _dumps(body)
        headers = [*self._headers, (b"content-length", b"%d" % len(content))]
        headers.append((b"accept", b"text/event-stream" if stream else b"application/json"))
        if request_id:
            headers.append((b"x-request-id", request_id.encode()))
        # Given a stream and every header, httpx.Request skips its own header preparation
        # (45 us a request here, a quarter of the engine's own time).
        upstream = httpx.Request("POST", url, stream=httpx.ByteStream(content), headers=headers,
                                 extensions={"timeout": self._timeouts if stream
                                             else self._plain_timeouts})
        try:
            response = await self._send(upstream)
        except httpx.HTTPError as exc:
            raise self._failed(_transport_error(self.url, exc)) from exc
        if response.status_code != 200:
            try:
                content = await _read_bounded(response)
            except httpx.HTTPError:
                content = b""
            finally:
                await response.aclose()
            raise self._failed(_status_error(self.url, response.status_code, content))
        return response

    async def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            content = await response.aread()
        except httpx.HTTPError as exc:
            raise self._failed(_transport_error(self.url, exc)) from exc
        finally:
            await response.aclose()
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise self._failed(
                BackendUnavailable(f"The backend {self.url} answered with something not JSON.")
            )
        return data

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._transport.handle_async_request(request)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            # Most often a pooled connection the server closed meanwhile (it restarted): once
            # more, on a new connection. Nothing was streamed to the client yet.
            return await self._transport.handle_async_request(request)

    def _failed(self, error: TextGenError) -> TextGenError:
        """Note a failure of the backend itself and hand the error back to raise.

        A 404 for a model it listed counts too: the backend was restarted with other models,
        and whoever watches it should ask again rather than wait for the next round.
        """
        if isinstance(error, BackendDown):
            self.up = False
        if isinstance(error, BackendUnavailable | EngineOverloaded):
            self.last_error = error.message
        if self.on_failure is not None and isinstance(
            error, BackendUnavailable | EngineOverloaded | ModelNotFound
        ):
            self.on_failure(self, error)
        return error

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.aclose()


# --- response -----------------------------------------------------------------------------


async def _sse_data(response: httpx.Response) -> AsyncIterator[bytes]:
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


class _UpstreamChunks:
    """The chunks of an upstream event stream, read as they arrive.

    A class rather than a generator so that `aclose()` closes the upstream response even when
    nobody started reading it (a client that left before the first chunk).
    """

    def __init__(self, engine: RemoteEngine, response: httpx.Response) -> None:
        self._engine = engine
        self._response = response
        self._events = _sse_data(response)
        self._done = False
        self._closed = False

    def __aiter__(self) -> _UpstreamChunks:
        return self

    async def __anext__(self) -> dict[str, Any]:
        engine, url = self._engine, self._engine.url
        while True:
            try:
                data = await anext(self._events)
            except StopAsyncIteration:
                await self.aclose()
                if self._done:
                    raise
                raise engine._failed(
                    BackendUnavailable(f"The backend {url} ended the stream before it finished.")
                ) from None
            except httpx.HTTPError as exc:
                await self.aclose()
                raise engine._failed(_transport_error(url, exc)) from exc
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
                raise engine._failed(
                    BackendUnavailable(f"The backend {url} sent a chunk we could not read.")
                )
            if "choices" not in chunk and ("error" in chunk or "message" in chunk):
                await self.aclose()
                raise engine._failed(_stream_error(url, chunk))
            return chunk

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._events.aclose()
            await self._response.aclose()
        finally:
            self._engine._in_flight -= 1


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # integers past 64 bits: the upstream judges them, as it would directly
        import json

        return json.dumps(body, separators=(",", ":")).encode()


async def _read_bounded(response: httpx.Response) -> bytes:
    content = b""
    async for piece in response.aiter_bytes():
        content += piece
        if len(content) > _ERROR_BODY_LIMIT:
            break
    return content


def _upstream_error(content: bytes) -> tuple[str | None, str | None]:
    """(message, param) of an upstream error body: OpenAI's envelope or vLLM's older flat form."""
    with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
        data = orjson.loads(content)
        error = data.get("error", data)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            param = error.get("param")
            return error["message"], param if isinstance(param, str) else None
        if isinstance(error, str):
            return error, None
    return None, None


def _status_error(url: str, status: int, content: bytes) -> TextGenError:
    message, param = _upstream_error(content)
    if (400 <= status < 500 and status not in (401, 403, 408, 429) or status == 501) and message:
        # The client's own mistake (context too long, no chat template, a feature the server
        # lacks): passed on with the server's status and message.
        return rejection(status, message, param)
    detail = f": {message}" if message else ""
    if status == 429:
        return EngineOverloaded(f"The backend {url} is at capacity (HTTP 429){detail}")
    if status == 503:
        return BackendDown(f"The backend {url} is unavailable (HTTP 503){detail}")
    if status in (408, 504):
        return BackendTimeout(f"The backend {url} timed out (HTTP {status}){detail}")
    return BackendUnavailable(f"The backend {url} answered HTTP {status}{detail}")


def _stream_error(url: str, chunk: dict[str, Any]) -> TextGenError:
    message = _upstream_error(orjson.dumps(chunk))[0] or "unknown error"
    return BackendUnavailable(f"The backend {url} failed while generating: {message}")


def _transport_error(url: str, exc: httpx.HTTPError) -> TextGenError:
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
        return BackendDown(f"The backend {url} cannot be reached ({name}).")
    if isinstance(exc, httpx.PoolTimeout):
        return EngineOverloaded(f"Every connection to the backend {url} is busy; retry shortly.")
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(f"The backend {url} did not answer in time ({name}).")
    return BackendUnavailable(f"The connection to the backend {url} failed ({name}).")
