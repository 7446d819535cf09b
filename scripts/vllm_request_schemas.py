"""Write vLLM's own request schemas (each route's body) into api/schemas/ for the OpenAPI doc.

The API describes its generation routes' bodies with vLLM's schema, the one they are validated
with; the headless image has no vLLM to ask at run time, so the JSON is kept in the repository.
tests/api/test_openapi.py fails when it no longer matches the installed vLLM: run this again.

    .venv/bin/python scripts/vllm_request_schemas.py           # write them
    .venv/bin/python scripts/vllm_request_schemas.py --check   # compare only
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCHEMAS = Path(__file__).resolve().parents[1] / "api" / "schemas"


def schemas() -> dict[str, dict]:
    from pydantic import TypeAdapter
    from vllm.entrypoints.anthropic.protocol import AnthropicMessagesRequest
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.openai.responses.protocol import ResponsesRequest
    from vllm.entrypoints.pooling.embed.protocol import CohereEmbedRequest, EmbeddingRequest
    from vllm.entrypoints.pooling.pooling.protocol import PoolingRequest
    from vllm.entrypoints.pooling.scoring.protocol import RerankRequest, ScoreRequest

    types = {"CompletionRequest": CompletionRequest, "ChatCompletionRequest": ChatCompletionRequest,
             "ResponsesRequest": ResponsesRequest, "AnthropicMessagesRequest": AnthropicMessagesRequest,
             "EmbeddingRequest": EmbeddingRequest, "PoolingRequest": PoolingRequest,
             "ScoreRequest": ScoreRequest, "RerankRequest": RerankRequest,
             "CohereEmbedRequest": CohereEmbedRequest}
    return {name: TypeAdapter(schema).json_schema() for name, schema in types.items()}


def main(check: bool) -> int:
    stale = []
    for name, schema in schemas().items():
        path = SCHEMAS / f"{name}.json"
        text = json.dumps(schema, indent=1, sort_keys=True) + "\n"
        if check:
            if not path.exists() or json.loads(path.read_text()) != json.loads(text):
                stale.append(name)
            continue
        path.write_text(text)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    if stale:
        print(f"not the installed vLLM's: {', '.join(stale)}; run scripts/vllm_request_schemas.py")
    return 1 if stale else 0


if __name__ == "__main__":
    # --check: compare instead of writing. In a process of its own: pydantic names a schema's
    # definitions by what else is imported (openai's `shared` and `shared_params` filters
    # get long names once both are loaded), so only a bare process gives the vendored text.
    sys.exit(main("--check" in sys.argv[1:]))
