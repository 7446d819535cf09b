"""textgen: vLLM text generation with a response cache, per-model limits and metrics."""

from .catalog import CATALOG, ModelSpec
from .errors import (
    AuthenticationFailed,
    BackendDown,
    BackendTimeout,
    BackendUnavailable,
    ContextLengthExceeded,
    EngineOverloaded,
    GenerationFailed,
    InvalidRequest,
    ModelNotFound,
    ModelNotReady,
    ModelUnavailable,
    RateLimited,
    TextGenError,
)
from .generation import Generation
from .models import ModelInfo
from .service import TextGen
from .settings import DEFAULT_MODEL, Settings
from .types import ChatMessage, Completion, Delta, GenerationRequest, SamplingOptions, Usage

__all__ = [
    "CATALOG", "DEFAULT_MODEL", "AuthenticationFailed", "BackendDown", "BackendTimeout", "BackendUnavailable",
    "ChatMessage", "Completion", "ContextLengthExceeded", "Delta", "EngineOverloaded",
    "Generation", "GenerationFailed", "GenerationRequest", "InvalidRequest", "ModelInfo",
    "ModelNotFound", "ModelNotReady", "ModelSpec", "ModelUnavailable", "RateLimited",
    "SamplingOptions", "Settings", "TextGen", "TextGenError", "Usage",
]
