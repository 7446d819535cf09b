"""vLLM's refusals as the lab's typed errors, by the status vLLM gives them.

vLLM's serving layer answers a bad request with an `ErrorResponse` (or raises, for a few
checks: `VLLMValidationError`, `ValueError`, jinja2's `TemplateError`); its own
`create_error_response` knows which status each deserves, so the lab asks it rather than
keeping a list of its own. The same mapping serves a remote vLLM server's error bodies.
"""

from __future__ import annotations

from typing import Any

from ..errors import (
    ContextLengthExceeded,
    GenerationFailed,
    InvalidRequest,
    ModelNotFound,
    RequestRejected,
    ResponseNotFound,
    TextGenError,
    invalid_value,
)

# vLLM names the parameter of an over-long prompt `input_tokens` (or `input_text`, when it
# refuses a text too long to fit before tokenizing it).
_CONTEXT_PARAMS = frozenset({"input_tokens", "input_text"})


def rejection(status: int, message: str, param: str | None) -> TextGenError:
    """The typed error for an engine's refusal with an HTTP status."""
    if status == 400:
        if param in _CONTEXT_PARAMS:
            return ContextLengthExceeded(message, param=param)
        return InvalidRequest(message, param=param)
    if status == 404:
        if param == "response_id":  # vLLM's store keeps no such response
            return ResponseNotFound(message, param=param)
        return ModelNotFound(message, param=param or "model")
    if 400 <= status < 500 or status == 501:
        return RequestRejected(message, status=status, param=param)
    return GenerationFailed(message)


def engine_error(error: Any) -> TextGenError:
    """An exception raised by vLLM's serving layer, or the `ErrorResponse` it returned."""
    from vllm.entrypoints.serve.engine.protocol import ErrorResponse
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

    response = error if isinstance(error, ErrorResponse) else create_error_response(error)
    info = response.error
    if not isinstance(error, ErrorResponse) and info.code >= 500 and info.code != 501:
        # An engine failure, not the request's fault: no internals in the message.
        return GenerationFailed(f"The engine failed while generating ({type(error).__name__}).")
    return rejection(int(info.code), info.message, info.param)


def stream_error(chunk: dict[str, Any]) -> TextGenError:
    """vLLM's error event in the middle of a stream."""
    error = chunk.get("error") or {}
    message = error.get("message") if isinstance(error, dict) else str(error)
    status = error.get("code") if isinstance(error, dict) else None
    return rejection(status if isinstance(status, int) else 500, message or "generation failed",
                     error.get("param") if isinstance(error, dict) else None)


def validation_error(exc: Any) -> InvalidRequest:
    """A pydantic ValidationError of vLLM's request schema: the first problem, and its field."""
    first = exc.errors()[0]
    from vllm.entrypoints.serve.exception_handling.handlers.validation import (
        clean_loc_for_param,
    )

    param = clean_loc_for_param(tuple(first.get("loc", ()))) or None
    ctx_error = (first.get("ctx") or {}).get("error")
    return invalid_value(first, getattr(ctx_error, "parameter", None) or param)


def adapter_error(response: Any, name: str) -> TextGenError:
    """vLLM's refusal to load a LoRA adapter. vLLM's server answers a folder with no adapter
    404 and anything its engine could not load (a wrong base, a rank past the limit) 500;
    the latter is the adapter's fault, not the lab's, so it is a 400 here."""
    info = response.error
    if int(info.code) >= 500:
        return InvalidRequest(f"The adapter '{name}' could not be loaded: {info.message}",
                              param="lora_path")
    return rejection(int(info.code), info.message, info.param or "lora_path")
