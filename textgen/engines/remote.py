"""One remote OpenAI-compatible vLLM server at one address, over a pooled keep-alive transport.

The client's body goes upstream as it was sent, so every field the upstream understands works
through the lab; the changes are `stream_options.include_usage` on streams (token counts are
the server's own; the usage chunk is dropped on the way out when the client did not ask for it)
and "bytes" for a pooling request's "bytes_only" (binary_pooling.py).
Chunks are passed on as they arrive (sse.py). Closing a stream closes the upstream response, and
vLLM aborts a request whose connection is gone. Failures become typed errors (remote_errors.py).

A request that never reached the server's application (nothing written, or a reused idle
connection the server had closed) is raised by `send` as `RequestNotSent`, so the model's
`ReplicaSet` can send it to another replica; nothing else is ever sent twice.

The server keeps its own health as the lab sees it (`state`, health.py): a request it fails
ejects it, one that cannot reach it marks it down. What it serves is read from its
`/v1/models` (discovery.py), its load and its engines' figures from its `/metrics` (load.py,
engine_stats.py), both over the same pool as the requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson
from prometheus_client.metrics_core import Metric

from .. import binary_pooling
from ..engine_stats import parse_metrics
from ..errors import (
    BackendDown,
    BackendUnavailable,
    EngineOverloaded,
    ModelNotFound,
    TextGenError,
)
from ..jsoncodec import dumps
from ..request import OpenAIRequest
from .base import EngineReply
from .discovery import adapters_of, guess_spec, runner_of, served_models, weights_ids
from .endpoint import Endpoint, base_url
from .health import ReplicaInfo, ServerHealth, State
from .http11 import Http11Transport, StaleConnection
from .load import ServerLoad, server_load
from .remote_errors import RequestNotSent, status_error, transport_error
from .sse import UpstreamChunks
from .upstream_client import UpstreamClient, read_bounded

# The names other modules have always imported from here.
__all__ = ["RemoteServer", "ReplicaInfo", "RequestNotSent", "base_url", "guess_spec"]

_ERROR_BODY_LIMIT = 64 * 1024
_METRICS_LIMIT = 4 * 1024 * 1024


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
        self._client = UpstreamClient(
            self.endpoint, address, transport or Http11Transport(max_connections=max_connections))
        # Shown in messages, /health and logs: the address it was reached at, no credentials.
        self.url = self.endpoint.shown if address is None else self._client.base
        self.health = ServerHealth(eject_seconds=eject_seconds,
                                   eject_max_seconds=eject_max_seconds)
        self.models: tuple[str, ...] = ()
        self.model_roots: dict[str, str] = {}
        # The LoRA adapters it lists: id -> (`parent`, `root`) of its model card.
        self.adapters: dict[str, tuple[str, str | None]] = {}
        # What vLLM serves its model as ("generate" or "pooling"); None: it did not say.
        self.runner: Literal["generate", "pooling"] | None = None
        self.load = ServerLoad()
        # Called on every failure of the server itself (not on the client's own 4xx).
        self.on_failure: Callable[[RemoteServer, TextGenError], None] | None = None
        self._in_flight = 0
        self._streams: set[UpstreamChunks] = set()
        self._timeouts = {"connect": connect_timeout, "read": read_timeout,
                          "write": write_timeout, "pool": read_timeout}
        # A plain request's answer comes in one piece when the generation ends: the wait for
        # it is bounded by the whole request's time, not by the gap between stream chunks.
        self._plain_timeouts = {**self._timeouts, "read": request_timeout}

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

    # --- health (read here, moved by `health` only) -----------------------------------------

    @property
    def state(self) -> State:
        return self.health.state

    @property
    def last_error(self) -> str | None:
        return self.health.last_error

    @property
    def retry_at(self) -> float:
        """Monotonic time of the next probe while ejected or down."""
        return self.health.retry_at

    def mark_up(self) -> None:
        """It answered a probe: back in rotation."""
        self.health.up()

    def mark_down(self, reason: str) -> None:
        """It cannot be reached (or cannot say what it serves): out until a probe passes."""
        self.health.down(reason)

    def eject(self, reason: str) -> None:
        """It failed a request (5xx, a broken stream): out for a back-off, then probed."""
        self.health.eject(reason)

    # --- discovery and load ---------------------------------------------------------------

    async def list_models(self) -> list[dict[str, Any]]:
        """The upstream's `/v1/models` entries; raises a backend error if it cannot say."""
        try:
            response = await self._client.request("GET", "/v1/models", None, self._timeouts)
            content = await response.aread()
        except httpx.HTTPError as exc:
            raise self._failed(transport_error(self.url, exc), eject=False) from exc
        if response.status_code != 200:
            raise self._failed(status_error(self.url, response.status_code, content),
                               eject=False)
        try:
            models = served_models(content)
        except ValueError as exc:
            raise self._failed(
                BackendUnavailable(f"The backend {self.url} answered /v1/models with garbage."),
                eject=False,
            ) from exc
        self.models = tuple(m["id"] for m in models)
        self.model_roots = weights_ids(models)  # part of the cache key
        self.adapters = adapters_of(models)
        return models

    async def read_runner(self) -> None:
        """What vLLM serves the model as, from the routes its server lists (discovery.py); a
        failed read keeps what was known."""
        try:
            response = await self._client.request("GET", "/openapi.json", None, self._timeouts)
            try:
                content = await read_bounded(response, _METRICS_LIMIT)
            finally:
                await response.aclose()
        except httpx.HTTPError:
            return
        if response.status_code == 200:
            self.runner = runner_of(content) or self.runner
        elif response.status_code == 404:  # FastAPI's docs turned off: it cannot say
            self.runner = None

    async def change_adapter(self, path: str, body: dict[str, Any]) -> tuple[int, str]:
        """POST vLLM's /v1/load_lora_adapter or /v1/unload_lora_adapter: its status and text
        as they are (0 and the reason when it cannot be reached), for a report per replica."""
        try:
            response = await self._client.request(
                "POST", path, dumps(body), self._plain_timeouts,
                [(b"content-type", b"application/json")])
            content = await read_bounded(response, _ERROR_BODY_LIMIT)
            await response.aclose()
        except httpx.HTTPError as exc:
            return 0, transport_error(self.url, exc).message
        return response.status_code, content.decode("utf-8", "replace")

    async def stored_response(self, response_id: str, *,
                              cancel: bool = False) -> dict[str, Any] | None:
        """A response this server's vLLM store keeps (`GET /v1/responses/{id}`), or the same
        cancelled; None when it keeps none by that id (its 404)."""
        path = f"/v1/responses/{quote(response_id, safe='')}" + ("/cancel" if cancel else "")
        try:
            response = await self._client.request("POST" if cancel else "GET", path, None,
                                                  self._plain_timeouts)
        except httpx.HTTPError as exc:
            raise self._failed(transport_error(self.url, exc), eject=False) from exc
        if response.status_code == 404:
            await response.aclose()
            return None
        if response.status_code != 200:
            content = await read_bounded(response, _ERROR_BODY_LIMIT)
            await response.aclose()
            raise status_error(self.url, response.status_code, content)
        return await self._json(response)

    async def read_metrics(self, seconds: float | None = None) -> list[Metric]:
        """The server's `/metrics` page, parsed (the families the lab reads of it).

        Raises httpx's errors (`HTTPStatusError` for an answer other than 200), or ValueError
        for a page that is not Prometheus text. `seconds` bounds each phase (connect, write,
        read, a free connection); by default the server's own timeouts.
        """
        timeouts = self._timeouts if seconds is None else dict.fromkeys(self._timeouts, seconds)
        response = await self._client.request("GET", "/metrics", None, timeouts)
        try:
            content = await read_bounded(response, _METRICS_LIMIT)
        finally:
            await response.aclose()
        if response.status_code != 200:
            request = httpx.Request("GET", self._client.url("/metrics"))
            raise httpx.HTTPStatusError(f"/metrics answered HTTP {response.status_code}",
                                        request=request, response=response)
        return parse_metrics(content)

    async def read_load(self) -> None:
        """Read the server's own load from its `/metrics` (vLLM's queue and KV cache gauges).

        A server that cannot be reached is marked down; one without the metrics keeps its
        previous reading (the load signal is optional, routing works without it).
        """
        ours = self._in_flight
        try:
            families = await self.read_metrics()
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self._failed(transport_error(self.url, exc))
            return
        except (httpx.HTTPError, ValueError):
            return
        self.load = server_load(families, ours=ours, read_at=time.monotonic())

    # --- generation -----------------------------------------------------------------------

    async def send(self, request: OpenAIRequest, request_id: str) -> EngineReply:
        """Answer a request; `RequestNotSent` when it never reached the server."""
        body = request.body
        if request.stream and not request.evented:
            options = body.get("stream_options")
            options = options if isinstance(options, dict) else {}
            body = {**body, "stream_options": {**options, "include_usage": True}}
        binary = binary_pooling.asks_binary(request)
        if binary:
            body = {**body, "encoding_format": "bytes"}  # with its usage (binary_pooling.py)
        self._in_flight += 1
        streaming = False  # once the chunks are handed over, closing them ends the request
        try:
            response = await self._post(request.path, body, request_id, stream=request.stream)
            if binary:
                return EngineReply(response=await self._binary(response))
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
            chunks = UpstreamChunks(response, self.url, failed=self._failed,
                                    closed=self._stream_closed,
                                    events_of=request.endpoint if request.evented else None)
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

    def cache_identity(self, model: str) -> str:
        """The server and what it says of the model: its folder (`root`) and context length."""
        return f"{self.endpoint.shown}|{self.model_roots.get(model, '')}"

    # --- requests -------------------------------------------------------------------------

    async def _post(self, path: str, body: dict[str, Any], request_id: str | None, *,
                    stream: bool) -> httpx.Response:
        """Send a JSON body; a non-200 answer becomes the typed error for its status."""
        extra = [(b"content-type", b"application/json"),
                 (b"accept", b"text/event-stream" if stream else b"application/json")]
        if request_id:
            extra.append((b"x-request-id", request_id.encode()))
        try:
            response = await self._client.request(
                "POST", path, dumps(body), self._timeouts if stream else self._plain_timeouts,
                extra)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise RequestNotSent(self._failed(transport_error(self.url, exc)),
                                 stale=False) from exc
        except StaleConnection as exc:
            # A keep-alive race, not a failure of the server: nobody is told.
            error = BackendUnavailable(
                f"The backend {self.url} closed the connection before answering.")
            raise RequestNotSent(error, stale=True) from exc
        except httpx.HTTPError as exc:
            raise self._failed(transport_error(self.url, exc)) from exc
        if response.status_code != 200:
            try:
                content = await read_bounded(response, _ERROR_BODY_LIMIT)
            except httpx.HTTPError:
                content = b""
            finally:
                await response.aclose()
            raise self._failed(status_error(self.url, response.status_code, content),
                               eject=response.status_code >= 500 and response.status_code != 501)
        self.health.answered()
        return response

    async def _read(self, response: httpx.Response) -> bytes:
        try:
            return await response.aread()
        except httpx.HTTPError as exc:
            raise self._failed(transport_error(self.url, exc)) from exc
        finally:
            await response.aclose()

    async def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = orjson.loads(await self._read(response))
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise self._failed(
                BackendUnavailable(f"The backend {self.url} answered with something not JSON.")
            )
        return data

    async def _binary(self, response: httpx.Response) -> dict[str, Any]:
        """vLLM's binary pooling answer as an answer object (binary_pooling.py)."""
        content = await self._read(response)
        try:
            return binary_pooling.answer_of(response.headers.get("metadata"), content)
        except ValueError:  # (a proxy that dropped the header, say: the server is fine)
            raise self._failed(BackendUnavailable(
                f"The backend {self.url} answered a binary pooling request without its "
                "metadata."), eject=False) from None

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
            self.health.note(error.message)
        if self.on_failure is not None and isinstance(
            error, BackendUnavailable | EngineOverloaded | ModelNotFound
        ):
            self.on_failure(self, error)
        return error

    def _stream_closed(self, chunks: UpstreamChunks) -> None:
        self._in_flight -= 1
        self._streams.discard(chunks)

    async def close(self) -> None:
        """Close the pool; streams still open keep their connections until they end."""
        await self._client.aclose()
