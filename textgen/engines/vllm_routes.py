"""Which of vLLM's serving objects answers each route in-process, with the request type its
server parses the body into, and how the answer reads back as objects.

The serving objects are those `init_app_state` builds for the engine's model: a text generator
has the completion, chat, Responses and Anthropic Messages ones; a pooling model (`--runner
pooling`) those for embeddings, pooling, score/rerank and classify. A route the model does not
serve has none: vLLM's server does not register it (404).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .. import binary_pooling
from ..request import OpenAIRequest, Route
from .errors import engine_error, rejection, validation_error

# The attribute of vLLM's app state holding each route's serving object, and its method.
_SERVING: dict[Route, tuple[str, str | None]] = {
    "completions": ("openai_serving_completion", "create_completion"),
    "chat": ("openai_serving_chat", "create_chat_completion"),
    "responses": ("openai_serving_responses", "create_responses"),
    "messages": ("anthropic_serving_messages", "create_messages"),
    "embeddings": ("serving_embedding", None),  # pooling serving objects are called
    "cohere_embed": ("serving_embedding", None),  # the same object reads Cohere's body too
    "pooling": ("serving_pooling", None),
    "score": ("serving_scores", None),
    "rerank": ("serving_scores", None),
    "classify": ("serving_classification", None),
}


@dataclass(frozen=True, slots=True)
class Serving:
    """A route's serving object for one engine: parse a body, then call it."""

    schema: Any  # a pydantic TypeAdapter of vLLM's request type
    call: Callable[[Any, Any], Awaitable[Any]]

    def parse(self, body: dict[str, Any]) -> Any:
        """vLLM's request object, or its refusal as a typed error (as FastAPI would give it)."""
        from pydantic import ValidationError

        try:
            return self.schema.validate_python(body)
        except ValidationError as exc:
            raise validation_error(exc) from None
        except Exception as exc:  # vLLM's model validators raise VLLMValidationError as is
            raise engine_error(exc) from None


def serving_for(state: Any, route: Route) -> Serving | None:
    """The serving object answering `route` on this engine, or None when it serves none."""
    attribute, method = _SERVING[route]
    serving = getattr(state, attribute, None)
    if serving is None:
        return None
    return Serving(_schema(route), getattr(serving, method) if method else serving)


def token_serving(state: Any, path: str) -> Serving:
    """`/tokenize`, `/detokenize` (every model) or `/v1/messages/count_tokens` (generators)."""
    if path == "/v1/messages/count_tokens":
        messages = getattr(state, "anthropic_serving_messages", None)
        if messages is None:
            raise rejection(404, f"This model does not serve {path} (it is a {runner(state)} "
                                 "model).", "model")
        return Serving(_token_schema(path), messages.count_tokens)
    tokenization = state.serving_tokenization
    if path == "/tokenize":
        return Serving(_token_schema(path), tokenization.create_tokenize)
    return Serving(_token_schema(path), tokenization.create_detokenize)


def runner(state: Any) -> str:
    """What vLLM serves the engine's model as: "generate" or "pooling"."""
    return "generate" if getattr(state, "openai_serving_completion", None) else "pooling"


@functools.cache
def _schema(route: Route) -> Any:
    from pydantic import TypeAdapter
    from vllm.entrypoints.anthropic.protocol import AnthropicMessagesRequest
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.openai.responses.protocol import ResponsesRequest
    from vllm.entrypoints.pooling.classify.protocol import ClassificationRequest
    from vllm.entrypoints.pooling.embed.protocol import CohereEmbedRequest, EmbeddingRequest
    from vllm.entrypoints.pooling.pooling.protocol import PoolingRequest
    from vllm.entrypoints.pooling.scoring.protocol import RerankRequest, ScoreRequest

    return TypeAdapter({
        "completions": CompletionRequest, "chat": ChatCompletionRequest,
        "responses": ResponsesRequest, "messages": AnthropicMessagesRequest,
        "embeddings": EmbeddingRequest, "cohere_embed": CohereEmbedRequest,
        "pooling": PoolingRequest, "score": ScoreRequest,
        "rerank": RerankRequest, "classify": ClassificationRequest,
    }[route])


@functools.cache
def _token_schema(path: str) -> Any:
    # Built once per path: a TypeAdapter compiles its schema, milliseconds per request.
    from pydantic import TypeAdapter
    from vllm.entrypoints.anthropic.protocol import AnthropicCountTokensRequest
    from vllm.entrypoints.serve.tokenize.protocol import DetokenizeRequest, TokenizeRequest

    return TypeAdapter({"/v1/messages/count_tokens": AnthropicCountTokensRequest,
                        "/tokenize": TokenizeRequest, "/detokenize": DetokenizeRequest}[path])


async def response_object(request: OpenAIRequest, result: Any) -> dict[str, Any]:
    """A plain answer as vLLM's route writes it: a pooling route's ready JSON response read
    back (or its binary one as an answer object: binary_pooling.py), a Responses object by its
    aliases, an Anthropic message without its empty fields."""
    if request.pooled:
        from starlette.responses import JSONResponse

        if isinstance(result, JSONResponse):
            return orjson.loads(result.body)  # type: ignore[no-any-return]
        # encoding_format "bytes": a StreamingResponse of the vectors, described in a header
        content = b"".join([piece async for piece in result.body_iterator])
        return binary_pooling.answer_of(result.headers.get("metadata"), content)
    if request.endpoint == "responses":
        return result.model_dump(mode="json", by_alias=True)  # type: ignore[no-any-return]
    if request.endpoint == "messages":
        return result.model_dump(mode="json", exclude_none=True)  # type: ignore[no-any-return]
    return result.model_dump(mode="json")  # type: ignore[no-any-return]


def stream_item(request: OpenAIRequest, item: Any) -> dict[str, Any] | None:
    """One item of vLLM's stream as an object: chat and completions (and Messages) give ready
    SSE strings, Responses its event models; None for what carries nothing ([DONE])."""
    if not isinstance(item, str):
        return item.model_dump(mode="json", by_alias=True)  # type: ignore[no-any-return]
    data = [line[5:].strip() for line in item.splitlines() if line.startswith("data:")]
    if not data or data == ["[DONE]"]:
        return None
    return orjson.loads("\n".join(data))  # type: ignore[no-any-return]


def is_error(request: OpenAIRequest, chunk: dict[str, Any]) -> bool:
    """vLLM's error event in the middle of a stream."""
    if chunk.get("type") == "error":
        return True
    return not request.evented and "choices" not in chunk and "error" in chunk
