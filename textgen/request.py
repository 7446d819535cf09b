"""The core's request: an OpenAI request body as the client sent it, and what the lab adds.

The body is not translated into a narrower type of our own: the in-process engine hands it to
vLLM's own OpenAI serving layer and a remote engine forwards it upstream, so every field vLLM
understands works, and the cache key covers every field (`textgen.cache.cache_key`). The lab
reads only `model` and `stream` from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .errors import InvalidRequest

# Which of vLLM's routes a request is for (not a server address: engines/endpoint.py): the two
# that generate text, and those a pooling model answers (embeddings, scores, classes).
Route = Literal["completions", "chat", "responses", "messages",
                "embeddings", "cohere_embed", "pooling", "score", "rerank", "classify"]
PATHS: dict[Route, str] = {
    "completions": "/v1/completions", "chat": "/v1/chat/completions",
    "responses": "/v1/responses", "messages": "/v1/messages",
    "embeddings": "/v1/embeddings", "cohere_embed": "/v2/embed", "pooling": "/pooling",
    "score": "/score",
    "rerank": "/rerank", "classify": "/classify",
}
# A pooling model's answer is one response, computed in one pass and the same every time: never
# streamed, never sampled.
POOLING_ROUTES: frozenset[Route] = frozenset({"embeddings", "cohere_embed", "pooling", "score",
                                              "rerank", "classify"})
# OpenAI's Responses and Anthropic's Messages stream typed events (`event:` lines, no [DONE]),
# not chunks of choices: a streamed answer and a plain one are not turned into each other.
EVENT_ROUTES: frozenset[Route] = frozenset({"responses", "messages"})
# Body fields of a Responses request that reach a conversation vLLM keeps (or run it in the
# background): such a request is never answered from the cache.
_STATEFUL_FIELDS = ("previous_response_id", "conversation", "background")


@dataclass(frozen=True, slots=True)
class OpenAIRequest:
    """A `POST` to one of vLLM's routes (`PATHS`): the route and the client's body."""

    endpoint: Route
    body: dict[str, Any]
    # Per-request cache control (Cache-Control: no-cache / no-store).
    read_cache: bool = True
    write_cache: bool = True
    # The client's X-Request-Id, passed to the engine so logs join across hops.
    request_id: str | None = None
    # The body's size as received, in bytes (0: unknown): big bodies are hashed off the loop.
    size: int = 0
    # Kept in the run store under this mode (api, playground, chat, compare, sweep, ...) when
    # set; None: not kept. `experiment` groups the runs of one evaluation or comparison.
    record: str | None = None
    experiment: str | None = None
    # The id its kept run gets (a new one when None): a caller that must find the run.
    run_id: str | None = None
    model: str = field(init=False)
    stream: bool = field(init=False)

    def __post_init__(self) -> None:
        # The two fields the lab itself acts on; everything else is the engine's to judge.
        model = self.body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest(
                "You must provide a model parameter (a model id from GET /v1/models).",
                param="model",
            )
        stream = self.body.get("stream", False)
        if stream is None or self.pooled:
            stream = False  # vLLM's pooling requests have no `stream`; it is ignored there
        if not isinstance(stream, bool):
            raise InvalidRequest("Invalid value for 'stream': expected a boolean.", param="stream")
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "stream", stream)

    @classmethod
    def completion(cls, **body: Any) -> OpenAIRequest:
        """A /v1/completions request from keyword fields, as the `openai` client takes them."""
        return cls("completions", body)

    @classmethod
    def chat(cls, **body: Any) -> OpenAIRequest:
        """A /v1/chat/completions request from keyword fields."""
        return cls("chat", body)

    @property
    def path(self) -> str:
        return PATHS[self.endpoint]

    @property
    def pooled(self) -> bool:
        """For a pooling model (embeddings, scores, classes): one deterministic response."""
        return self.endpoint in POOLING_ROUTES

    @property
    def evented(self) -> bool:
        """Streamed as typed events (Responses, Messages) rather than chunks of choices."""
        return self.endpoint in EVENT_ROUTES

    @property
    def cacheable(self) -> bool:
        """Whether the cache may answer or keep it at all (sampling aside: `sampled`).

        A Responses request only when stateless (`store: false`, no conversation it continues):
        a stored response must be made, and one that continues another depends on what is
        kept upstream, not only on its body."""
        if self.endpoint == "responses":
            return self.body.get("store") is False and not any(
                self.body.get(field) for field in _STATEFUL_FIELDS)
        return True

    @property
    def sampled(self) -> bool:
        """Drawn at random: a temperature above 0 (or none: vLLM's default samples), no seed."""
        if self.pooled:
            return False
        temperature = self.body.get("temperature")
        random = temperature is None or (isinstance(temperature, int | float) and temperature > 0)
        return random and self.body.get("seed") is None

    @property
    def include_usage(self) -> bool:
        """The client asked for the usage chunk at the end of a stream."""
        options = self.body.get("stream_options")
        return bool(self.stream and isinstance(options, dict) and options.get("include_usage"))

    def kept_as(self, mode: str, experiment: str | None = None) -> OpenAIRequest:
        """The same request, kept in the run store under `mode` (and an experiment)."""
        return replace(self, record=mode, experiment=experiment)

    def with_body(self, **changes: Any) -> OpenAIRequest:
        """The same request with some body fields changed."""
        return replace(self, body={**self.body, **changes})

    def streamed(self) -> OpenAIRequest:
        return self if self.stream else self.with_body(stream=True)

    def plain(self) -> OpenAIRequest:
        """The same request, not streamed (`stream_options` only goes with a stream)."""
        if not self.stream and "stream_options" not in self.body:
            return self
        body = {k: v for k, v in self.body.items() if k != "stream_options"}
        return replace(self, body={**body, "stream": False})
