"""The OpenAPI document, with the engine routes' request bodies described as vLLM's.

The routes read their bodies themselves (they pass them to vLLM's serving layer or upstream
as sent), so FastAPI cannot see their schema: it is added here from api/schemas/, vLLM's own
request schemas (scripts/vllm_request_schemas.py writes them), so clients, schemathesis and
the docs page know what the routes take.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

SCHEMAS = Path(__file__).resolve().parent / "schemas"
BODIES = {
    "/v1/completions": "CompletionRequest", "/v1/chat/completions": "ChatCompletionRequest",
    "/v1/responses": "ResponsesRequest", "/v1/messages": "AnthropicMessagesRequest",
    "/v1/embeddings": "EmbeddingRequest", "/pooling": "PoolingRequest", "/score": "ScoreRequest",
    "/rerank": "RerankRequest", "/v2/embed": "CohereEmbedRequest",
}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for path, name in BODIES.items():
                components.update(_component(name))
                document["paths"][path]["post"]["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
                }
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _component(name: str) -> dict[str, Any]:
    """One request schema and its definitions as OpenAPI components, names kept apart."""
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    definitions = schema.pop("$defs", {})
    text = json.dumps({name: schema, **{f"{name}.{k}": v for k, v in definitions.items()}})
    return json.loads(text.replace('"#/$defs/', f'"#/components/schemas/{name}.'))  # type: ignore[no-any-return]
