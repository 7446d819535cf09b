"""The OpenAPI document describes every route, the generation bodies as vLLM's own schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.openapi import BODIES
from textgen import Settings


def test_engine_route_bodies_are_vllms_request_schemas() -> None:
    # In a process of its own (the script says why); VLLM_TARGET_DEVICE: no engine is started.
    script = Path(__file__).resolve().parents[2] / "scripts" / "vllm_request_schemas.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "VLLM_TARGET_DEVICE": "cpu"})
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_the_document_resolves_and_names_the_bodies() -> None:
    app = create_app(Settings(MODEL="", VLLM_ENDPOINT="", METRICS_PORT=0), ui=False)
    with TestClient(app) as client:
        document = client.get("/openapi.json").json()
    components = document["components"]["schemas"]
    assert set(BODIES) >= {"/v1/completions", "/v1/chat/completions", "/v1/responses",
                           "/v1/messages", "/v1/embeddings", "/v2/embed", "/pooling", "/score",
                           "/rerank"}
    for path, name in BODIES.items():
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["$ref"] == f"#/components/schemas/{name}"
        if path in ("/v1/completions", "/v1/chat/completions"):
            assert {"model", "stream"} <= set(components[name]["properties"])
    text = str(document)
    assert "#/$defs/" not in text  # every reference points into the document
    refs = {part.split("'")[0] for part in text.split("'$ref': '#/components/schemas/")[1:]}
    assert refs <= set(components)
    assert {"/health", "/ready", "/tokenize", "/detokenize"} <= set(document["paths"])
