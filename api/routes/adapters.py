"""POST /v1/load_lora_adapter and /v1/unload_lora_adapter: vLLM's routes and bodies.

As vLLM's server does, a success is a 200 with a plain-text sentence; a refusal is the lab's
error envelope with the status vLLM gives for it (textgen.adapters). `base_model_name` is the
lab's addition: which loaded model the adapter goes to, when its config does not say.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from textgen import InvalidRequest

from ..deps import AdminTextGenDep
from ..http import read_json

router = APIRouter(tags=["models"])


def _field(body: dict[str, Any], name: str, kind: type = str) -> Any:
    """A body field of the given type, or None when absent; a field of another type is a 400
    (what is missing or empty is textgen.adapters' to refuse, in vLLM's words)."""
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise InvalidRequest(f"'{name}' must be a {kind.__name__}.", param=name)
    return value


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse,
             summary="Load a LoRA adapter as a model (vLLM's route)")
async def load_lora_adapter(request: Request, textgen: AdminTextGenDep) -> PlainTextResponse:
    body = (await read_json(request))[0]
    name = _field(body, "lora_name") or ""
    await textgen.load_adapter(name, _field(body, "lora_path") or "",
                               _field(body, "base_model_name"),
                               replace=bool(_field(body, "load_inplace", bool)))
    return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse,
             summary="Unload a LoRA adapter (vLLM's route)")
async def unload_lora_adapter(request: Request,
                              textgen: AdminTextGenDep) -> PlainTextResponse:
    name = _field((await read_json(request))[0], "lora_name") or ""
    if not name:  # vLLM's words
        raise InvalidRequest("'lora_name' needs to be provided to unload a LoRA adapter.",
                             param="lora_name")
    await textgen.unload_adapter(name)
    return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")
