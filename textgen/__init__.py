"""textgen: vLLM text generation with a response cache, per-model limits and metrics."""

from .answer import Answer
from .catalog import CATALOG, ModelSpec
from .errors import (
    AuthenticationFailed,
    BackendDown,
    BackendTimeout,
    BackendUnavailable,
    ContextLengthExceeded,
    EngineOverloaded,
    GenerationFailed,
    GenerationInterrupted,
    InvalidRequest,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotReady,
    ModelUnavailable,
    PermissionDenied,
    RateLimited,
    RequestRejected,
    RequestTooLarge,
    ShuttingDown,
    TextGenError,
)
from .generation import Generation
from .models import ModelInfo
from .request import OpenAIRequest
from .service import TextGen
from .settings import DEFAULT_MODEL, EMBEDDING_MODEL, Settings

__all__ = [
    "CATALOG", "DEFAULT_MODEL", "EMBEDDING_MODEL", "Answer", "AuthenticationFailed", "BackendDown", "BackendTimeout",
    "BackendUnavailable", "ContextLengthExceeded", "EngineOverloaded", "Generation",
    "GenerationFailed", "GenerationInterrupted", "InvalidRequest", "ModelInfo", "ModelLoadFailed", "ModelNotFound", "ModelNotReady",
    "ModelSpec", "ModelUnavailable", "OpenAIRequest", "PermissionDenied", "RateLimited", "RequestRejected",
    "RequestTooLarge", "Settings", "ShuttingDown", "TextGen", "TextGenError",
]
