"""The OpenAPI document describes every route, the generation bodies as vLLM's own schema."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.app import create_app
from textgen import Settings


def test_generation_bodies_are_vllms_request_schemas() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from vllm_request_schemas import SCHEMAS, schemas

    for name, schema in schemas().items():
        vendored = (SCHEMAS / f"{name}.json").read_text()
        import json

        assert json.loads(vendored) == json.loads(json.dumps(schema)), (
            f"api/schemas/{name}.json is not the installed vLLM's: run "
            "scripts/vllm_request_schemas.py")


def test_the_document_resolves_and_names_the_bodies() -> None:
    app = create_app(Settings(MODEL="", VLLM_ENDPOINT="", METRICS_PORT=0), ui=False)
    with TestClient(app) as client:
        document = client.get("/openapi.json").json()
    components = document["components"]["schemas"]
    for path, name in (("/v1/completions", "CompletionRequest"),
                       ("/v1/chat/completions", "ChatCompletionRequest")):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["$ref"] == f"#/components/schemas/{name}"
        assert {"model", "stream"} <= set(components[name]["properties"])
    text = str(document)
    assert "#/$defs/" not in text  # every reference points into the document
    refs = {part.split("'")[0] for part in text.split("'$ref': '#/components/schemas/")[1:]}
    assert refs <= set(components)
    assert {"/health", "/ready", "/tokenize", "/detokenize"} <= set(document["paths"])
