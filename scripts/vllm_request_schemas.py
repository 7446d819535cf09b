"""Write vLLM's own request schemas (completions, chat) into api/schemas/ for the OpenAPI doc.

The API describes its generation routes' bodies with vLLM's schema, the one they are validated
with; the headless image has no vLLM to ask at run time, so the JSON is kept in the repository.
tests/api/test_openapi.py fails when it no longer matches the installed vLLM: run this again.

    .venv/bin/python scripts/vllm_request_schemas.py
"""

from __future__ import annotations

import json
from pathlib import Path

SCHEMAS = Path(__file__).resolve().parents[1] / "api" / "schemas"


def schemas() -> dict[str, dict]:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    return {"CompletionRequest": CompletionRequest.model_json_schema(),
            "ChatCompletionRequest": ChatCompletionRequest.model_json_schema()}


if __name__ == "__main__":
    for name, schema in schemas().items():
        path = SCHEMAS / f"{name}.json"
        path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path} ({path.stat().st_size} bytes)")
