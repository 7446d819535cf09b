"""Typed errors of the core; the API maps each class to one HTTP status in one table.

    TextGenError
     ├── InvalidRequest          bad parameter values (400)
     │    ├── ContextLengthExceeded
     │    └── RequestTooLarge     a body past MAX_REQUEST_BYTES (413)
     ├── RequestRejected         the engine refused a request with another 4xx/501: its status
     ├── AuthenticationFailed    missing or wrong bearer token (401)
     ├── ModelNotFound           no such model in the catalog (404)
     ├── ModelUnavailable        known model that cannot run here (its weights are absent) (404)
     ├── RateLimited             per-model request limit reached (429)
     ├── EngineOverloaded        too many requests in flight on one engine (503)
     ├── ModelNotReady           the model is loading or not loaded (503)
     ├── GenerationInterrupted   the model was unloaded or the lab is stopping mid-request (503)
     ├── ShuttingDown            the lab is draining: no new requests (503)
     ├── BackendUnavailable      a remote backend answered garbage or failed (502)
     │    ├── BackendDown        a remote backend cannot be reached (503)
     │    └── BackendTimeout     a remote backend did not answer in time (504)
     ├── GenerationFailed        the engine failed while generating (500)
     ├── ModelLoadFailed         a model's engine could not start: its folder or flags (500)
     ├── RunNotFound             no kept run with that id (404)
     ├── ExperimentNotFound      no experiment (evaluation) with that id (404)
     └── RunStoreUnavailable     the run store is off or its database is down (503)

    InvalidTransition            a model's status asked to make a move its table forbids: a bug
                                 in the lab, not a request's fault, so it is no TextGenError (no
                                 error code of its own; the API answers it as any bug, 500)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class TextGenError(Exception):
    """Base of every error the core raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(TextGenError):
    code = "invalid_request"


def invalid_value(problem: Mapping[str, Any], param: str | None) -> InvalidRequest:
    """One pydantic validation problem (an item of `ValidationError.errors()`) as the lab says
    it, for vLLM's request schemas and the lab's own routes alike. Each caller names `param`
    its own way: the engine path as vLLM does (its answer is the oracle), the API from the
    location FastAPI reports."""
    message = problem.get("msg", "Invalid request.")
    return InvalidRequest(f"Invalid value for '{param}': {message}" if param else message,
                          param=param)


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class RequestTooLarge(InvalidRequest):
    code = "request_too_large"


class RequestRejected(TextGenError):
    """The engine (vLLM's serving layer, or a remote server) refused a request with a status
    of its own (422, 501, ...): passed on with that status."""

    code = "request_rejected"

    def __init__(self, message: str, *, status: int, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.status = status


class AuthenticationFailed(TextGenError):
    code = "invalid_api_key"


class PermissionDenied(TextGenError):
    """A known client asked for what only the admin token may do (ADMIN_TOKEN)."""

    code = "admin_token_required"


class ModelNotFound(TextGenError):
    code = "model_not_found"


class ModelUnavailable(TextGenError):
    code = "model_unavailable"


class RateLimited(TextGenError):
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, limit: int, reset_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit
        self.reset_after = reset_after


class EngineOverloaded(TextGenError):
    code = "engine_overloaded"
    retry_after = 1.0


class ModelNotReady(TextGenError):
    code = "model_not_ready"

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GenerationInterrupted(TextGenError):
    """A request in flight was ended by the lab: its model was unloaded, or the lab is stopping."""

    code = "generation_interrupted"
    retry_after = 5.0


class ShuttingDown(TextGenError):
    """The lab is draining before it stops: requests go to another replica."""

    code = "shutting_down"
    retry_after = 5.0


class BackendUnavailable(TextGenError):
    code = "backend_unavailable"


class BackendDown(BackendUnavailable):
    code = "backend_down"
    retry_after = 2.0


class BackendTimeout(BackendUnavailable):
    code = "backend_timeout"


class GenerationFailed(TextGenError):
    code = "generation_failed"


class ModelLoadFailed(TextGenError):
    """A model's engine could not start (a folder vLLM cannot load, flags it refuses, memory):
    the lab's configuration, not the request, so retrying does not help."""

    code = "model_load_failed"


class RunNotFound(TextGenError):
    code = "run_not_found"


class ExperimentNotFound(TextGenError):
    code = "experiment_not_found"


class ResponseNotFound(TextGenError):
    """No engine here keeps a stored Responses answer by that id."""

    code = "response_not_found"


class RunStoreUnavailable(TextGenError):
    """The run store is off, or its database cannot be read now (runs are still kept in
    memory for it: textgen.runs.store)."""

    code = "run_store_unavailable"
    retry_after = 5.0


class InvalidTransition(RuntimeError):
    """A model entry was asked to move between two states that its table of moves does not
    allow (textgen/models/states.py); the entry is left as it was."""

    def __init__(self, model_id: str, current: str, wanted: str) -> None:
        super().__init__(f"The model '{model_id}' cannot move from {current} to {wanted}.")
        self.model_id = model_id
        self.current = current
        self.wanted = wanted


def error_codes() -> list[str]:
    """Every `code` a request can fail with (the error_type label of the error counter)."""
    codes, todo = set(), [TextGenError]
    while todo:
        cls = todo.pop()
        codes.add(cls.code)
        todo.extend(cls.__subclasses__())
    return sorted(codes)
