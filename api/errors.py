"""Every error leaves the API in OpenAI's envelope (Anthropic's on the Messages routes); each
error class maps to one status here."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from textgen import errors as e
from textgen import jsoncodec

from .request_ids import request_id

log = logging.getLogger(__name__)

# pydantic names the member of a union that failed ("str", "list[int]"): not a parameter.
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|(list|dict|tuple|literal)\[.*\]|function-.*)$")

# (status, OpenAI error type) for each core error; the most specific class wins.
STATUS: dict[type[e.TextGenError], tuple[int, str]] = {
    e.RequestTooLarge: (413, "invalid_request_error"),
    e.ContextLengthExceeded: (400, "invalid_request_error"),
    e.InvalidRequest: (400, "invalid_request_error"),
    e.AuthenticationFailed: (401, "authentication_error"),
    e.PermissionDenied: (403, "permission_error"),
    e.ModelNotFound: (404, "invalid_request_error"),
    e.ModelUnavailable: (404, "invalid_request_error"),
    e.RateLimited: (429, "rate_limit_error"),
    e.EngineOverloaded: (503, "service_unavailable_error"),
    e.ModelNotReady: (503, "service_unavailable_error"),
    e.GenerationInterrupted: (503, "service_unavailable_error"),
    e.ShuttingDown: (503, "service_unavailable_error"),
    e.BackendTimeout: (504, "backend_timeout_error"),
    e.BackendDown: (503, "service_unavailable_error"),
    e.BackendUnavailable: (502, "backend_error"),
    e.GenerationFailed: (500, "server_error"),
    e.ModelLoadFailed: (500, "server_error"),
    e.RunNotFound: (404, "invalid_request_error"),
    e.ExperimentNotFound: (404, "invalid_request_error"),
    e.ResponseNotFound: (404, "invalid_request_error"),
    e.RunStoreUnavailable: (503, "service_unavailable_error"),
}


# Anthropic's error types by status (its docs' "HTTP errors"); what is not listed is an api_error.
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error",
                    529: "overloaded_error"}
_ANTHROPIC_PATHS = "/v1/messages"  # and /v1/messages/count_tokens


def status_of(exc: e.TextGenError) -> tuple[int, str]:
    if isinstance(exc, e.RequestRejected):  # the engine's own status, passed on
        return exc.status, "invalid_request_error" if exc.status < 500 else "not_implemented_error"
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500, "server_error"


def envelope(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    return jsoncodec.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def anthropic_error(status: int, message: str) -> dict[str, str]:
    """The `error` object of Anthropic's envelope, as its clients read it (vLLM's Messages
    routes answer in it too)."""
    return {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}


def anthropic_envelope(status: int, message: str) -> bytes:
    return jsoncodec.dumps({"type": "error", "error": anthropic_error(status, message)})


def is_anthropic(request: Request) -> bool:
    return request.url.path.startswith(_ANTHROPIC_PATHS)


def error_body(exc: e.TextGenError) -> bytes:
    _, type_ = status_of(exc)
    return envelope(exc.message, type_, exc.param, exc.code)


def error_headers(exc: e.TextGenError) -> dict[str, str]:
    retry_after = getattr(exc, "retry_after", None)
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if isinstance(exc, e.RateLimited):
        headers.update(
            {
                "x-ratelimit-limit-requests": str(exc.limit),
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{exc.reset_after:.3f}s",
            }
        )
    if isinstance(exc, e.AuthenticationFailed):
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def _answer(request: Request, status: int, message: str, type_: str, param: str | None,
            code: str | None, headers: Mapping[str, str] | None = None) -> Response:
    """The error response of every handler, in the envelope of the route's API."""
    body = (anthropic_envelope(status, message) if is_anthropic(request)
            else envelope(message, type_, param, code))
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def validation_message(exc: ValidationError | RequestValidationError) -> tuple[str, str | None]:
    """The first problem of a validation error, as a sentence and the parameter it names."""
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ())
           if p not in ("body", "query", "path") and not _UNION_TAG.match(str(p))]
    problem = e.invalid_value(first, ".".join(loc) or None)
    return problem.message, problem.param


def install(app: FastAPI) -> None:
    """Route every error through the envelope: typed core errors, validation, HTTP errors."""

    @app.exception_handler(e.TextGenError)
    async def _core(request: Request, exc: e.TextGenError) -> Response:
        status, type_ = status_of(exc)
        return _answer(request, status, exc.message, type_, exc.param, exc.code,
                       error_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        message, param = validation_message(exc)
        return _answer(request, 400, message, "invalid_request_error", param, "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _answer(request, exc.status_code, str(exc.detail), type_, None, code,
                       getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # Never leak internals (or secrets in them) to the client. This handler runs in
        # Starlette's outermost middleware, outside RequestIdMiddleware: it sets the id itself.
        rid = request_id(request)
        log.exception("unhandled error (request %s)", rid)
        return _answer(request, 500, "The server had an error while processing your request.",
                       "server_error", None, "internal_error", {"X-Request-Id": rid})
