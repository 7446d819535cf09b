"""What a remote server says it serves, read from its `/v1/models` (and its `/openapi.json`:
whether it generates or pools), and what the lab makes of it.

The lab learns a remote model from the server alone: its id, its owner, the folder its weights
came from and its context length. The weights' identity is part of the cache key (the same id
served from other weights is another model), and a model the catalog does not know gets a size
class guessed from its name, since the size class sets a model's default rate limit.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson

from ..catalog import CATALOG_BY_ID, ModelSpec

_SIZE = re.compile(r"(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?![a-z])", re.IGNORECASE)
_INSTRUCT = re.compile(r"instruct|chat|(?:^|[-_])it(?:$|[-_])", re.IGNORECASE)


def served_models(content: bytes) -> list[dict[str, Any]]:
    """The entries of a `/v1/models` answer that name a model; ValueError if it is not one."""
    try:
        data = orjson.loads(content)["data"]
        return [m for m in data if isinstance(m["id"], str)]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError("not a /v1/models answer") from exc


def adapters_of(models: list[dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    """The LoRA adapters among them: id -> (`parent`, `root`) of the model card."""
    return {m["id"]: (m["parent"], m.get("root")) for m in models
            if isinstance(m.get("parent"), str) and m["parent"] != m["id"]}


def runner_of(openapi: bytes) -> Literal["generate", "pooling"] | None:
    """What vLLM serves a server's model as, from the routes its `/openapi.json` lists: vLLM's
    server registers a generator's routes or a pooling model's, never both (its model card
    does not say). None when the page cannot say (FastAPI's docs turned off, not vLLM)."""
    try:
        paths = orjson.loads(openapi)["paths"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(paths, dict):
        return None
    if "/v1/completions" in paths or "/v1/chat/completions" in paths:
        return "generate"
    if "/v1/embeddings" in paths or "/pooling" in paths:
        return "pooling"
    return None


def weights_ids(models: list[dict[str, Any]]) -> dict[str, str]:
    """What identifies the weights behind each model: vLLM's model card names the folder it
    loaded (`root`) and its context length."""
    return {m["id"]: f"{m.get('root') or ''}|{m.get('max_model_len') or ''}" for m in models}


def guess_spec(model_id: str, owned_by: str | None = None) -> ModelSpec:
    """A catalog entry for a model only a backend knows: size class guessed from its name."""
    known = CATALOG_BY_ID.get(model_id)
    if known is not None:
        return known
    name = model_id.rsplit("/", 1)[-1]
    params = 7.0  # the seed's smallest class, when the name says nothing
    match = _SIZE.search(name)
    if match is not None:
        experts, size, unit = match.groups()
        params = float(size) * (int(experts) if experts else 1) / (1000 if unit in "mM" else 1)
    owner = model_id.split("/", 1)[0] if "/" in model_id else (owned_by or "remote")
    return ModelSpec(model_id, params, instruct=bool(_INSTRUCT.search(name)), owned_by=owner)
