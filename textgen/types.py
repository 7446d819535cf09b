"""The core's own request and result types; the API converts OpenAI's schema into these."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

Prompt = str | list[int]
FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    """Everything that changes the generated text, with OpenAI's defaults for completions."""

    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logprobs: int | None = None
    echo: bool = False
    logit_bias: tuple[tuple[int, float], ...] = ()
    # vLLM's extensions, as its own server accepts them
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, object]:
        # Every field is a scalar or a tuple of scalars: a shallow dict equals asdict()'s deep
        # copy, at a tenth of its cost (it is on every request's path, in the cache key).
        return {name: getattr(self, name) for name in _OPTION_FIELDS}


_OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingOptions))


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One request to the core: a model, one or more prompts (or chat messages) and sampling."""

    model: str
    prompts: tuple[Prompt, ...] = ()
    messages: tuple[ChatMessage, ...] | None = None
    options: SamplingOptions = field(default_factory=SamplingOptions)
    # Per-request cache control (Cache-Control: no-cache / no-store).
    read_cache: bool = True
    write_cache: bool = True

    @property
    def kind(self) -> Literal["completion", "chat"]:
        return "chat" if self.messages is not None else "completion"

    @property
    def choice_count(self) -> int:
        return max(len(self.prompts), 1) * self.options.n


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(slots=True)
class Delta:
    """A piece of one choice's output as it streams."""

    index: int
    text: str
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob | None] | None = None


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Choice:
    index: int
    text: str = ""
    finish_reason: FinishReason | None = None
    logprobs: list[TokenLogprob | None] | None = None


@dataclass(slots=True)
class Completion:
    """A finished generation, as the API renders it and the cache stores it."""

    model: str
    choices: list[Choice]
    usage: Usage
    # The order in which pieces arrived: (choice index, text, logprob entries in it). Lets a
    # cached stream be replayed with its original chunking instead of as one blob.
    pieces: list[tuple[int, str, int]] = field(default_factory=list)
