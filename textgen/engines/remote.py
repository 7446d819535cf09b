"""One remote OpenAI-compatible vLLM server at one address, over a pooled keep-alive transport.

The client's body goes upstream as it was sent, so every field the upstream understands works
through the lab; the one change is `stream_options.include_usage` on streams (token counts are
the server's own; the usage chunk is dropped on the way out when the client did not ask for it).
Chunks are passed on as they arrive. Closing a stream closes the upstream response, and vLLM
aborts a request whose connection is gone. Failures become typed errors:

    connection refused, connect timeout, upstream 503   BackendDown (503)
    no answer within the read timeout                   BackendTimeout (504)
    garbage, an upstream 5xx, a stream cut short        BackendUnavailable (502)
    upstream 4xx / 501                                  the same status, with its message

A request that never reached the server's application (nothing written, or a reused idle
connection the server had closed) is raised by `send` as `RequestNotSent`, so the model's
`ReplicaSet` can send it to another replica; nothing else is ever sent twice.

The server keeps its own health as the lab sees it (`state`): `up`; `ejected` after it answered
a request with a 5xx or broke a stream; `down` when it cannot be reached or cannot list its
models. Ejected and down servers take no requests until a probe (their `/v1/models`, asked by
`RemoteBackends` at `retry_at`) brings them back; the wait doubles with each ejection in a row.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

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
from ..request import OpenAIRequest
from .base import EngineReply
from .endpoint import Endpoint, base_url
from .errors import rejection
from .http11 import Http11Transport, StaleConnection
from .load import ServerLoad, parse_load

__all__ = ["RemoteServer", "ReplicaInfo", "RequestNotSent", "base_url", "guess_spec"]

log = logging.getLogger(__name__)

State = Literal["unknown", "up", "ejected", "down"]
_ERROR_BODY_LIMIT = 64 * 1024
_METRICS_LIMIT = 4 * 1024 * 1024

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


class RequestNotSent(Exception):
    """The request did not reach the server's application: it may be sent again.

    `stale`: written on a reused connection the server had closed (a new connection to the same
    server may work); otherwise nothing was written (the server cannot be reached).
    """

    def __init__(self, error: TextGenError, *, stale: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.stale = stale


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """What /v1/models/{id}, /health and the UI show of one replica (a server at one address)."""

    url: str
    status: State
    in_flight: int
    error: str | None
    # From the server's own /metrics, when read (REMOTE_LOAD_METRICS_INTERVAL_SECONDS).
    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None
    prefix_cache_hit_rate: float | None = None


class RemoteServer:
    """One vLLM server: its endpoint, or one address the endpoint's name resolved to."""

    def __init__(
        self,
        endpoint: Endpoint | str,
        address: str | None = None,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 60.0,
        request_timeout: float = 600.0,
        write_timeout: float = 10.0,
        max_connections: int = 256,
        eject_seconds: float = 2.0,
        eject_max_seconds: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint if isinstance(endpoint, Endpoint) else Endpoint.parse(endpoint)
        self.address = address
        base = self.endpoint.at(address)
        # Shown in messages, /health and logs: the address it was reached at, no credentials.
        self.url = self.endpoint.shown if address is None else base
        self.state: State = "unknown"
        self.last_error: str | None = None
        self.retry_at = 0.0  # monotonic time of the next probe while ejected or down
        self.models: tuple[str, ...] = ()
        self.model_roots: dict[str, str] = {}
        self.load = ServerLoad()
        # Called on every failure of the server itself (not on the client's own 4xx).
        self.on_failure: Callable[[RemoteServer, TextGenError], None] | None = None
        self._ejections = 0  # in a row: the next back-off doubles
        self._eject_seconds = eject_seconds
        self._eject_max = max(eject_max_seconds, eject_seconds)
        self._in_flight = 0
        self._streams: set[_UpstreamChunks] = set()
        self._closed = False
        self._transport = transport or Http11Transport(max_connections=max_connections)
        self._timeouts = {"connect": connect_timeout, "read": read_timeout,
                          "write": write_timeout, "pool": read_timeout}
        # A plain request's answer comes in one piece when the generation ends: the wait for
        # it is bounded by the whole request's time, not by the gap between stream chunks.
        self._plain_timeouts = {**self._timeouts, "read": request_timeout}
        # URLs and headers built once here: httpx's per-request layers (URL merging, header
        # preparation) cost a quarter of the engine's own time per request.
        self._urls: dict[str, httpx.URL] = {}
        self._base = base
        self._headers: list[tuple[bytes, bytes]] = [(b"host", self.endpoint.host_header.encode())]
        if self.endpoint.authorization:
            self._headers.append((b"authorization", self.endpoint.authorization.encode()))
        self._extensions: dict[str, Any] = {}
        if address is not None and self.endpoint.scheme == "https":
            # The certificate names the service, not the pod's address.
            self._extensions["sni_hostname"] = self.endpoint.host

    def __repr__(self) -> str:
        return f"RemoteServer({self.url!r})"

    @property
    def key(self) -> str:
        """A stable name for routing (the same server after a restart keeps its prefixes)."""
        return self.url

    def in_flight(self) -> int:
        """Generation requests sent upstream and not yet answered (streams not yet closed)."""
        return self._in_flight

    def load_score(self) -> int:
        """Requests on the server as we count them: ours now, plus the others' (other API
        replicas) as its own /metrics said when last read."""
        return self._in_flight + self.load.foreign()

    def info(self) -> ReplicaInfo:
        load = self.load
        return ReplicaInfo(
            url=self.url, status=self.state, in_flight=self._in_flight,
            error=None if self.state == "up" else self.last_error,
            waiting=load.waiting, running=load.running, kv_cache_usage=load.kv_cache_usage,
            prefix_cache_hit_rate=load.prefix_cache_hit_rate(),
        )

    # --- health ---------------------------------------------------------------------------

    def mark_up(self) -> None:
        """It answered a probe: back in rotation."""
        self.state, self.last_error, self.retry_at = "up", None, 0.0

    def mark_down(self, reason: str) -> None:
        """It cannot be reached (or cannot say what it serves): out until a probe passes."""
        self._back_off("down", reason)

    def eject(self, reason: str) -> None:
        """It failed a request (5xx, a broken stream): out for a back-off, then probed."""
        if self.state == "down":
            self.last_error = reason
            return
        self._back_off("ejected", reason)

    def _back_off(self, state: State, reason: str) -> None:
        now = time.monotonic()
        self.last_error = reason
        if self.state == state and now < self.retry_at:
            return  # requests that were in flight failing too: one ejection, not several
        self._ejections += 1
        delay = min(self._eject_seconds * 2 ** (self._ejections - 1), self._eject_max)
        self.state, self.retry_at = state, now + delay

    # --- discovery and load ---------------------------------------------------------------

    async def list_models(self) -> list[dict[str, Any]]:
        """The upstream's `/v1/models` entries; raises a backend error if it cannot say."""
        try:
            response = await self._request("GET", "/v1/models", None, self._timeouts)
            content = await response.aread()
        except httpx.HTTPError as exc:
            raise self._failed(_transport_error(self.url, exc), eject=False) from exc
        if response.status_code != 200:
            raise self._failed(_status_error(self.url, response.status_code, content),
                               eject=False)
        try:
            data = orjson.loads(content)["data"]
            models = [m for m in data if isinstance(m["id"], str)]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise self._failed(
                BackendUnavailable(f"The backend {self.url} answered /v1/models with garbage."),
                eject=False,
            ) from exc
        self.models = tuple(m["id"] for m in models)
        # What identifies the weights behind each model (part of the cache key): vLLM's
        # model card names the folder it loaded (`root`) and its context length.
        self.model_roots = {m["id"]: f"{m.get('root') or ''}|{m.get('max_model_len') or ''}"
                            for m in models}
        return models

    async def read_load(self) -> None:
        """Read the server's own load from its `/metrics` (vLLM's queue and KV cache gauges).

        A server that cannot be reached is marked down; one without the metrics keeps its
        previous reading (the load signal is optional, routing works without it).
        """
        ours = self._in_flight
        try:
            response = await self._request("GET", "/metrics", None, self._timeouts)
            try:
                content = await _read_bounded(response, _METRICS_LIMIT)
            finally:
                await response.aclose()
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._failed(_transport_error(self.url, exc))
            return
        except httpx.HTTPError:
            return
        if response.status_code == 200:
            self.load = parse_load(content, ours=ours, read_at=time.monotonic())

    # --- generation -----------------------------------------------------------------------

    async def send(self, request: OpenAIRequest, request_id: str) -> EngineReply:
        """Answer a request; `RequestNotSent` when it never reached the server."""
        body = request.body
        if request.stream:
            options = body.get("stream_options")
            options = options if isinstance(options, dict) else {}
            body = {**body, "stream_options": {**options, "include_usage": True}}
        self._in_flight += 1
        streaming = False  # once the chunks are handed over, closing them ends the request
        try:
            response = await self._post(request.path, body, request_id, stream=request.stream)
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
            chunks = _UpstreamChunks(self, response)
            self._streams.add(chunks)
            return EngineReply(chunks=chunks)
        finally:
            if not streaming:
                self._in_flight -= 1

    async def generate(self, request: OpenAIRequest, request_id: str) -> EngineReply:
        """`send` on its own: a request that did not reach the server is its error."""
        try:
            return await self.send(request, request_id)
        except RequestNotSent as exc:
            raise exc.error from exc

    async def tokenize(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._post(path, body, None, stream=False)
        return await self._json(response)

    async def interrupt(self, error: TextGenError) -> None:
        """End the streams open on this server with `error` (the lab is stopping)."""
        for chunks in list(self._streams):
            await chunks.interrupt(error)

    def weights(self, model: str) -> str:
        """The server and what it says of the model: its folder (`root`) and context length."""
        return f"{self.endpoint.shown}|{self.model_roots.get(model, '')}"

    # --- requests -------------------------------------------------------------------------

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self._base + path)
        return url

    async def _request(self, method: str, path: str, content: bytes | None,
                       timeouts: dict[str, float], extra: list[tuple[bytes, bytes]] | None = None,
                       ) -> httpx.Response:
        headers = [*self._headers, *(extra or ())]
        if content is not None:
            headers.append((b"content-length", b"%d" % len(content)))
        # Given a stream and every header, httpx.Request skips its own header preparation
        # (45 us a request here, a quarter of the engine's own time).
        upstream = httpx.Request(method, self._url(path),
                                 stream=httpx.ByteStream(content or b""), headers=headers,
                                 extensions={"timeout": timeouts, **self._extensions})
        return await self._transport.handle_async_request(upstream)

    async def _post(self, path: str, body: dict[str, Any], request_id: str | None, *,
                    stream: bool) -> httpx.Response:
        """Send a JSON body; a non-200 answer becomes the typed error for its status."""
        extra = [(b"content-type", b"application/json"),
                 (b"accept", b"text/event-stream" if stream else b"application/json")]
        if request_id:
            extra.append((b"x-request-id", request_id.encode()))
        try:
            response = await self._request("POST", path, _dumps(body),
                                           self._timeouts if stream else self._plain_timeouts,
                                           extra)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise RequestNotSent(self._failed(_transport_error(self.url, exc)),
                                 stale=False) from exc
        except StaleConnection as exc:
            # A keep-alive race, not a failure of the server: nobody is told.
            error = BackendUnavailable(
                f"The backend {self.url} closed the connection before answering.")
            raise RequestNotSent(error, stale=True) from exc
        except httpx.HTTPError as exc:
            raise self._failed(_transport_error(self.url, exc)) from exc
        if response.status_code != 200:
            try:
                content = await _read_bounded(response, _ERROR_BODY_LIMIT)
            except httpx.HTTPError:
                content = b""
            finally:
                await response.aclose()
            raise self._failed(_status_error(self.url, response.status_code, content),
                               eject=response.status_code >= 500 and response.status_code != 501)
        self._ejections = 0  # it answers: the next ejection starts from the shortest wait
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

    def _failed(self, error: TextGenError, *, eject: bool | None = None) -> TextGenError:
        """Note a failure of the server itself and hand the error back to raise.

        Down when it cannot be reached; ejected when it broke a request (`eject`, by default
        any plain BackendUnavailable: garbage, a cut stream); a timeout of ours or its 429 says
        it is slow or busy, not broken. A 404 for a model it listed is passed on too: it was
        restarted with other models, and whoever watches it should ask again now.
        """
        if isinstance(error, BackendDown):
            self.mark_down(error.message)
        elif eject or (eject is None and type(error) is BackendUnavailable):
            self.eject(error.message)
        if isinstance(error, BackendUnavailable | EngineOverloaded):
            self.last_error = error.message
        if self.on_failure is not None and isinstance(
            error, BackendUnavailable | EngineOverloaded | ModelNotFound
        ):
            self.on_failure(self, error)
        return error

    async def close(self) -> None:
        """Close the pool; streams still open keep their connections until they end."""
        if not self._closed:
            self._closed = True
            await self._transport.aclose()


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

    def __init__(self, server: RemoteServer, response: httpx.Response) -> None:
        self._server = server
        self._response = response
        self._events = _sse_data(response)
        self._done = False
        self._closed = False
        self._interrupted: TextGenError | None = None

    def __aiter__(self) -> _UpstreamChunks:
        return self

    async def __anext__(self) -> dict[str, Any]:
        server, url = self._server, self._server.url
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
                raise server._failed(
                    BackendUnavailable(f"The backend {url} ended the stream before it finished.")
                ) from None
            except httpx.HTTPError as exc:
                await self.aclose()
                if self._interrupted is not None:
                    raise self._interrupted from None
                raise server._failed(_transport_error(url, exc)) from exc
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
                raise server._failed(
                    BackendUnavailable(f"The backend {url} sent a chunk we could not read.")
                )
            if "choices" not in chunk and ("error" in chunk or "message" in chunk):
                await self.aclose()
                raise server._failed(_stream_error(url, chunk))
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
            self._server._in_flight -= 1
            self._server._streams.discard(self)


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # integers past 64 bits: the upstream judges them, as it would directly
        import json

        return json.dumps(body, separators=(",", ":")).encode()


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    content = b""
    stream: Any = response.stream
    async for piece in stream:
        content += piece
        if len(content) > limit:
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
    if status in (401, 403):
        # Our credentials upstream (VLLM_API_KEY), not the client's: a 502 of ours.
        return BackendUnavailable(
            f"The backend {url} refused our credentials (HTTP {status}); check VLLM_API_KEY"
            f"{detail}")
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
        reason = " (its TLS certificate was refused)" if "CERTIFICATE" in str(exc) else ""
        return BackendDown(f"The backend {url} cannot be reached ({name}){reason}.")
    if isinstance(exc, httpx.PoolTimeout):
        return EngineOverloaded(f"Every connection to the backend {url} is busy; retry shortly.")
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(f"The backend {url} did not answer in time ({name}).")
    return BackendUnavailable(f"The connection to the backend {url} failed ({name}).")
