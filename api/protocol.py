"""The response schema of the lab's own routes (models, health, runs), as pydantic models.

The generation routes have no schema of ours: their bodies are vLLM's (the in-process engine
validates them with vLLM's own request classes, a remote server with its own).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # A LoRA adapter: its base model and its folder, as vLLM's server lists them.
    root: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ReplicaStatus(BaseModel):
    """One replica of a remote model: a vLLM server at one address, its state and load
    (read from the core's `ReplicaInfo` as it is)."""

    model_config = ConfigDict(from_attributes=True)

    url: str
    status: str  # up, ejected (failed a request, probe pending), down, unknown
    in_flight: int
    error: str | None = None
    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None
    prefix_cache_hit_rate: float | None = None


class ModelStatus(BaseModel):
    """The seed's body for GET /v1/models/{model_id}, plus OpenAI's model card fields (so
    `client.models.retrieve` works) and what the lab knows of the model, read from the core's
    `ModelInfo` as it is (`ModelStatus.model_validate(info)`)."""

    model_config = ConfigDict(from_attributes=True)

    model: str = Field(validation_alias="id")
    status: str
    gpu_memory_usage: float | None
    loaded_at: float | None
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    reason: str | None = None
    instruct: bool
    runner: str = "generate"
    size_class: str
    rate_limit_per_minute: int = Field(validation_alias="rate_limit")
    backend: str
    routing: str | None = None
    replicas: list[ReplicaStatus] = []
    parent: str | None = None
    root: str | None = None


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    reasons: list[str] = []


class Health(BaseModel):
    status: str
    service: str = "text-generator"
    timestamp: float
    components: dict[str, Any] = {}


class Run(BaseModel):
    """A kept run (textgen.runs): the request as sent (less `stream`), its answer as one
    response object, and how, when and with what it was made."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    object: Literal["run"] = "run"
    created: float
    model: str
    route: str
    mode: str
    status: str
    error: str | None = None
    cache: str
    request: dict[str, Any]
    answer: dict[str, Any] | None = None
    text: str
    prompt_tokens: int
    completion_tokens: int
    ttft: float | None = None
    queue: float | None = None
    seconds: float
    identity: str | None = None
    engine: str | None = None
    vllm_version: str | None = None
    device: str | None = None
    request_id: str | None = None
    experiment: str | None = None


class RunList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Run]
