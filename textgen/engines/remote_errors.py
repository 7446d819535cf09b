"""A remote vLLM server's failures as the lab's typed errors, decided in one place.

`RemoteServer` meets three kinds of failure: an HTTP status other than 200, an exception of the
transport, and an error event in the middle of a stream. Each becomes one typed error here, so
the API's status for it is chosen by its type (api/errors.py's table), never by its message:

    connection refused, connect timeout, upstream 503   BackendDown (503)
    no answer within the read timeout                   BackendTimeout (504)
    garbage, an upstream 5xx, a stream cut short        BackendUnavailable (502)
    every connection busy, upstream 429                 EngineOverloaded (429)
    upstream 4xx / 501                                  the same status, with its message

A request that never reached the server's application is `RequestNotSent`, the one failure a
`ReplicaSet` may send elsewhere.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import orjson

from ..errors import (
    BackendDown,
    BackendTimeout,
    BackendUnavailable,
    EngineOverloaded,
    TextGenError,
)
from .errors import rejection


class RequestNotSent(Exception):
    """The request did not reach the server's application: it may be sent again.

    `stale`: written on a reused connection the server had closed (a new connection to the same
    server may work); otherwise nothing was written (the server cannot be reached).
    """

    def __init__(self, error: TextGenError, *, stale: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.stale = stale


def upstream_error(content: bytes) -> tuple[str | None, str | None]:
    """(message, param) of an upstream error body: OpenAI's envelope or vLLM's older flat form."""
    with contextlib.suppress(orjson.JSONDecodeError, TypeError, AttributeError):
        data = orjson.loads(content)
        error = data.get("error", data)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            param = error.get("param")
            return error["message"], param if isinstance(param, str) else None
        if isinstance(error, str):
            return error, None
        if isinstance(data.get("detail"), str):  # FastAPI's own 404/405: a route not served
            return data["detail"], None
    return None, None


def status_error(url: str, status: int, content: bytes) -> TextGenError:
    """The error for an upstream answer with `status` (not 200) and body `content`."""
    message, param = upstream_error(content)
    if status == 404 and message == "Not Found":
        # vLLM's server registers only the routes its model serves (chat on a generator,
        # embeddings on a pooling model): the same 404 a client of the server would get.
        message, param = (f"The backend {url} does not serve this route for its model (a text "
                          "generator or a pooling model: vLLM serves each its own routes)."), "model"
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


def stream_error(url: str, chunk: dict[str, Any]) -> TextGenError:
    """The error for an error event in the middle of an upstream stream."""
    message = upstream_error(orjson.dumps(chunk))[0] or "unknown error"
    return BackendUnavailable(f"The backend {url} failed while generating: {message}")


def transport_error(url: str, exc: httpx.HTTPError) -> TextGenError:
    """The error for an exception of the transport (http11's, which are httpx's)."""
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
        reason = " (its TLS certificate was refused)" if "CERTIFICATE" in str(exc) else ""
        return BackendDown(f"The backend {url} cannot be reached ({name}){reason}.")
    if isinstance(exc, httpx.PoolTimeout):
        return EngineOverloaded(f"Every connection to the backend {url} is busy; retry shortly.")
    if isinstance(exc, httpx.TimeoutException):
        return BackendTimeout(f"The backend {url} did not answer in time ({name}).")
    return BackendUnavailable(f"The connection to the backend {url} failed ({name}).")
