"""Property tests: schemathesis against the running lab's OpenAPI document, with the engine.

Every route the document describes - the engine routes' bodies as vLLM's own request schemas
(completions, chat, Responses, Messages, embeddings, pooling, score, rerank) - is
called with generated requests (40 per route), valid and not: no answer may be a 5xx (a 503 the lab means,
with Retry-After, is allowed: capacity and readiness). Bounded: a few examples per route, and
generation kept to a few tokens, so it runs in a minute or two. Load and unload are left out:
they would take the session lab's model away from the other tests.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.support.processes import LabServer

pytestmark = pytest.mark.engine

# Fields that make an answer long; generated values are capped so a run stays short.
_CAPS = {"max_tokens": 8, "max_completion_tokens": 8, "max_output_tokens": 8, "n": 2,
         "best_of": 2, "min_tokens": 4, "logprobs": 2, "top_logprobs": 2, "prompt_logprobs": 2}


def bounded(body: Any) -> None:
    if not isinstance(body, dict):
        return
    for field, cap in _CAPS.items():
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            body[field] = cap
    if "messages" in body or "prompt" in body:
        body.setdefault("max_tokens", 8)
    if "input" in body and "max_output_tokens" not in body:  # a Responses body
        body["max_output_tokens"] = 8


def test_no_generated_request_gets_a_server_error(lab: LabServer) -> None:
    schema = schemathesis.openapi.from_url(lab.base_url + "/openapi.json").exclude(
        path_regex=r"/(load|unload)$")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions"}
    calls: dict[str, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            bounded(case.body)
            response = case.call(base_url=lab.base_url, timeout=120,
                                 headers={**lab.headers, "Cache-Control": "no-store"})
            label = f"{case.method.upper()} {case.operation.path}"
            calls[label] = calls.get(label, 0) + 1
            if response.status_code == 503:
                assert "Retry-After" in response.headers, response.text[:300]
                return
            assert response.status_code < 500, (
                f"{case.as_curl_command()}\n-> {response.status_code} {response.text[:500]}")
            if response.status_code >= 400 and case.operation.path.startswith("/v1/messages"):
                assert response.json()["type"] == "error"  # Anthropic's envelope
                assert set(response.json()["error"]) == {"type", "message"}
            elif response.status_code >= 400:
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}

        call()
    # Routes without inputs are called once; the others with many generated requests each.
    for route in ("POST /v1/completions", "POST /v1/chat/completions", "POST /v1/responses",
                  "POST /v1/messages", "POST /v1/embeddings", "POST /score", "POST /rerank"):
        assert calls.get(route, 0) >= 10, calls
