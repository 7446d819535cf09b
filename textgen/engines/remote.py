"""A remote OpenAI-compatible vLLM server, reached over one pooled `httpx.AsyncClient`.

Every request goes upstream with `stream: true` and `stream_options.include_usage`, whatever
the client asked for: deltas are passed on chunk by chunk as they arrive and the token counts
are the server's own. Closing the generator closes the upstream response, and vLLM aborts a
request whose connection is gone. Failures become typed errors:

    connection refused, connect timeout, upstream 503   BackendDown (503)
    no answer within the read timeout                   BackendTimeout (504)
    garbage, an upstream 5xx, a stream cut short        BackendUnavailable (502)
    upstream 4xx                                        InvalidRequest (400) with its message
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
    InvalidRequest,
    ModelNotFound,
    TextGenError,
)
from ..types import Delta, FinishReason, GenerationRequest, SamplingOptions, TokenLogprob, Usage
from .base import EngineEvent
from .http11 import Http11Transport

log = logging.getLogger(__name__)

_API_SUFFIXES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/v1")
_DEFAULTS = SamplingOptions()
# vLLM's sampling extensions: sent only when they differ from the default, so a plain
# OpenAI-compatible server that does not know them still works.
_EXTENSIONS = ("top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos")
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
        max_connections: int = 256,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = base_url(endpoint)
        # Up or down as last seen (None until the first call); read by /health and discovery.
        self.up: bool | None = None
        self.last_error: str | None = None
        self.models: tuple[str, ...] = ()
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
        self._paths = {
            False: httpx.URL(self.url + "/v1/completions"),
            True: httpx.URL(self.url + "/v1/chat/completions"),
        }
        self._headers = [
            (b"host", httpx.URL(self.url).netloc),
            (b"content-type", b"application/json"),
            (b"accept", b"text/event-stream"),
        ]

    def __repr__(self) -> str:
        return f"RemoteEngine({self.url!r})"

    def in_flight(self) -> int:
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
        self.up, self.last_error = True, None
        return models

    # --- generation -----------------------------------------------------------------------

    async def generate(
        self, request: GenerationRequest, request_id: str
    ) -> AsyncIterator[EngineEvent]:
        chat = request.messages is not None
        content = orjson.dumps(_payload(request))
        # Given a stream and every header, httpx.Request skips its own header preparation
        # (45 us a request here, a quarter of the engine's own time).
        upstream = httpx.Request(
            "POST",
            self._paths[chat],
            stream=httpx.ByteStream(content),
            headers=[
                *self._headers,
                (b"content-length", b"%d" % len(content)),
                (b"x-request-id", request_id.encode()),
            ],
            extensions={"timeout": self._timeouts},
        )
        self._in_flight += 1
        try:
            response = await self._send(upstream)
            # Leaving this block (end, error, or the consumer closing us early) closes the
            # upstream response; vLLM aborts a request whose connection went away.
            async with contextlib.aclosing(response):
                if response.status_code != 200:
                    content = await _read_bounded(response)
                    raise self._failed(_status_error(self.url, response.status_code, content))
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    raise self._failed(
                        BackendUnavailable(
                            f"The backend {self.url} answered a streaming request without an event "
                            "stream."
                        )
                    )
                usage: Usage | None = None
                done = False
                events = _sse_data(response)
                async with contextlib.aclosing(events):
                    async for data in events:
                        if data == b"[DONE]" or done:
                            # Read on to the end of the body: a response read to its end
                            # puts its connection back in the pool for the next request.
                            done = True
                            continue
                        try:
                            chunk = orjson.loads(data)
                            if "choices" not in chunk and ("error" in chunk or "message" in chunk):
                                raise self._failed(_stream_error(self.url, chunk))
                            for choice in chunk["choices"]:
                                delta = _delta(choice, chat)
                                if delta is not None:
                                    yield delta
                            if chunk.get("usage"):
                                u = chunk["usage"]
                                usage = Usage(u["prompt_tokens"], u.get("completion_tokens") or 0)
                        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                            raise self._failed(
                                BackendUnavailable(
                                    f"The backend {self.url} sent a chunk we could not read."
                                )
                            ) from exc
                if not done:
                    raise self._failed(
                        BackendUnavailable(
                            f"The backend {self.url} ended the stream before it finished."
                        )
                    )
        except httpx.HTTPError as exc:
            raise self._failed(_transport_error(self.url, exc)) from exc
        finally:
            self._in_flight -= 1
        yield usage or Usage()

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


# --- request ------------------------------------------------------------------------------


def _payload(request: GenerationRequest) -> dict[str, Any]:
    o = request.options
    body: dict[str, Any] = {"model": request.model}
    if request.messages is not None:
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        if o.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = o.logprobs
    else:
        prompts = request.prompts
        body["prompt"] = prompts[0] if len(prompts) == 1 else list(prompts)
        if o.logprobs is not None:
            body["logprobs"] = o.logprobs
        if o.echo:
            body["echo"] = True
    body["max_tokens"] = o.max_tokens
    body["temperature"] = o.temperature
    body["top_p"] = o.top_p
    if o.n != 1:
        body["n"] = o.n
    if o.stop:
        body["stop"] = list(o.stop)
    if o.presence_penalty:
        body["presence_penalty"] = o.presence_penalty
    if o.frequency_penalty:
        body["frequency_penalty"] = o.frequency_penalty
    if o.seed is not None:
        body["seed"] = o.seed
    if o.logit_bias:
        body["logit_bias"] = {str(token): bias for token, bias in o.logit_bias}
    if o.stop_token_ids:
        body["stop_token_ids"] = list(o.stop_token_ids)
    for name in _EXTENSIONS:
        value = getattr(o, name)
        if value != getattr(_DEFAULTS, name):
            body[name] = value
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


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


def _finish_reason(reason: str | None) -> FinishReason | None:
    if reason is None:
        return None
    return reason if reason in ("length", "abort") else "stop"  # type: ignore[return-value]


def _delta(choice: dict[str, Any], chat: bool) -> Delta | None:
    if chat:
        text = choice["delta"].get("content") or ""
        logprobs = _chat_logprobs(choice.get("logprobs"))
    else:
        text = choice["text"]
        logprobs = _completion_logprobs(choice.get("logprobs"))
    finish = _finish_reason(choice.get("finish_reason"))
    if not text and finish is None and not logprobs:
        return None  # the role-only first chunk of a chat stream
    return Delta(index=choice["index"], text=text, finish_reason=finish, logprobs=logprobs)


def _completion_logprobs(data: dict[str, Any] | None) -> list[TokenLogprob | None] | None:
    if not data:
        return None
    result: list[TokenLogprob | None] = []
    tops = data.get("top_logprobs") or [None] * len(data["tokens"])
    for token, logprob, top in zip(data["tokens"], data["token_logprobs"], tops, strict=False):
        if logprob is None:
            result.append(None)
            continue
        result.append(TokenLogprob(token, logprob, tuple((top or {}).items())))
    return result


def _chat_logprobs(data: dict[str, Any] | None) -> list[TokenLogprob | None] | None:
    if not data or data.get("content") is None:
        return None
    return [
        TokenLogprob(
            e["token"],
            e["logprob"],
            tuple((t["token"], t["logprob"]) for t in e.get("top_logprobs") or ()),
        )
        for e in data["content"]
    ]


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
    if 400 <= status < 500 and status not in (401, 403, 408, 429) and message:
        # The client's own mistake (context too long, no chat template): passed on as a 400.
        if status == 404:
            return ModelNotFound(message, param=param or "model")
        return InvalidRequest(message, param=param)
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
