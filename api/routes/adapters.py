"""POST /v1/load_lora_adapter and /v1/unload_lora_adapter: vLLM's routes and bodies.

As vLLM's server does, a success is a 200 with a plain-text sentence; a refusal is the lab's
error envelope with the status vLLM gives for it (textgen.adapters). `base_model_name` is the
lab's addition: which loaded model the adapter goes to, when its config does not say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from textgen import InvalidRequest

from ..deps import AuthorizedTextGenDep
from ..http import read_json

router = APIRouter(tags=["models"])


def _text(body: dict[str, Any], field: str, *, required: bool = True) -> str | None:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"'{field}' must be a non-empty string.", param=field)
    return value


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse,
             summary="Load a LoRA adapter as a model (vLLM's route)")
async def load_lora_adapter(request: Request, textgen: AuthorizedTextGenDep) -> PlainTextResponse:
    body = (await read_json(request))[0]
    name, path = _text(body, "lora_name"), _text(body, "lora_path")
    assert name is not None and path is not None
    await textgen.load_adapter(name, Path(path), _text(body, "base_model_name", required=False))
    return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse,
             summary="Unload a LoRA adapter (vLLM's route)")
async def unload_lora_adapter(request: Request,
                              textgen: AuthorizedTextGenDep) -> PlainTextResponse:
    name = _text((await read_json(request))[0], "lora_name")
    assert name is not None
    await textgen.unload_adapter(name)
    return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")
