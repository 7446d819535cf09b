"""OpenAI's request and response schema for the routes we serve, as pydantic models.

Field order follows OpenAI's reference; vLLM's sampling extensions sit in a marked block.
Unknown fields are ignored (OpenAI clients send new fields before servers know them), which
matches what OpenAI's own API and vLLM's server do; wrong types and values are 400s.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from textgen import ChatMessage, GenerationRequest, InvalidRequest, SamplingOptions

_MAX_N = 16
_MAX_LOGPROBS = 5


class StreamOptions(BaseModel):
    include_usage: bool = False


class _SamplingFields(BaseModel):
    """Fields shared by completions and chat completions."""

    model_config = ConfigDict(extra="ignore")

    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    n: int = Field(1, ge=1, le=_MAX_N)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    user: str | None = None
    # --- vLLM extensions ---
    top_k: int = Field(0, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=2.0)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if isinstance(v, list) and any(s == "" for s in v):
            raise ValueError("stop sequences must not be empty")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (v or {}).items():
            if not key.lstrip("-").isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError("logit_bias values must lie in [-100, 100]")
        return v

    def _options(self, max_tokens: int | None, logprobs: int | None, echo: bool) -> SamplingOptions:
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return SamplingOptions(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            n=self.n,
            stop=tuple(stop),
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            logprobs=logprobs,
            echo=echo,
            logit_bias=tuple(sorted((int(k), float(b)) for k, b in (self.logit_bias or {}).items())),
            top_k=self.top_k,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            min_tokens=self.min_tokens,
            ignore_eos=self.ignore_eos,
            stop_token_ids=tuple(self.stop_token_ids or ()),
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(_SamplingFields):
    """POST /v1/completions."""

    model: str
    prompt: Prompt
    best_of: int | None = Field(None, ge=1, le=_MAX_N)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=_MAX_LOGPROBS)
    max_tokens: int | None = Field(16, ge=1)
    suffix: str | None = None

    @model_validator(mode="after")
    def _check(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != self.n:
            raise InvalidRequest("best_of other than n is not supported.", param="best_of")
        if self.suffix:
            raise InvalidRequest("suffix is not supported.", param="suffix")
        if isinstance(self.prompt, list) and len(self.prompt) == 0:
            raise InvalidRequest("prompt must not be empty.", param="prompt")
        if isinstance(self.prompt, str) and self.prompt == "":
            raise InvalidRequest("prompt must not be empty.", param="prompt")
        if self.stream and self.n * len(self.prompts()) > 64:
            raise InvalidRequest("at most 64 choices can be streamed at once.", param="n")
        return self

    def prompts(self) -> tuple[str | list[int], ...]:
        p = self.prompt
        if isinstance(p, str):
            return (p,)
        if all(isinstance(x, int) for x in p):
            return (list(p),)  # type: ignore[arg-type]
        return tuple(x if isinstance(x, str) else list(x) for x in p)  # type: ignore[misc]

    def to_generation_request(self, *, read_cache: bool, write_cache: bool) -> GenerationRequest:
        """The core's request type: the core never sees HTTP types."""
        return GenerationRequest(
            model=self.model,
            prompts=self.prompts(),
            options=self._options(self.max_tokens, self.logprobs, self.echo),
            read_cache=read_cache,
            write_cache=write_cache,
        )


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise InvalidRequest("Only text content parts are supported.", param="messages")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class ChatCompletionRequest(_SamplingFields):
    """POST /v1/chat/completions."""

    model: str
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=_MAX_LOGPROBS)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def to_generation_request(self, *, read_cache: bool, write_cache: bool) -> GenerationRequest:
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        return GenerationRequest(
            model=self.model,
            messages=tuple(ChatMessage(m.role if m.role != "developer" else "system", m.text())
                           for m in self.messages),
            options=self._options(self.max_completion_tokens or self.max_tokens, logprobs, False),
            read_cache=read_cache,
            write_cache=write_cache,
        )


# --- responses (plain dicts are built in rendering.py for speed; these document the shape) ---


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ModelStatus(BaseModel):
    """The seed's body for GET /v1/models/{model_id}, plus OpenAI's model card fields (so
    `client.models.retrieve` works) and what the lab knows of the model."""

    model: str
    status: str
    gpu_memory_usage: float | None
    loaded_at: float | None
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    reason: str | None = None
    instruct: bool
    size_class: str
    rate_limit_per_minute: int
    backend: str


class Health(BaseModel):
    status: str
    service: str = "text-generator"
    timestamp: float
    components: dict[str, Any] = {}
