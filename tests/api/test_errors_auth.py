"""In-process API tests (lifespan running) that need no engine: auth, errors, models, health."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from api.app import create_app
from textgen import DEFAULT_MODEL, Settings

TOKEN = "s3cret-token"
LOCAL = "local/not-loaded"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(MODEL="", VLLM_ENDPOINT="", METRICS_PORT=0, API_TOKEN=TOKEN,
                        TEXT_GEN_API_TOKEN="other-token", MODEL_PATHS={LOCAL: Path(__file__).parent},
                        RATE_LIMITS={"tiiuae/falcon-7b": 2, DEFAULT_MODEL: 3})
    with TestClient(create_app(settings, ui=False)) as c:
        yield c


def assert_envelope(response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


def test_health_is_open_and_has_the_seed_body(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["service"] == "text-generator"
    assert isinstance(body["timestamp"], float)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": "Basic " + TOKEN}])
def test_bad_or_missing_token_is_401(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get("/v1/models", headers=headers)
    assert_envelope(response, 401, "invalid_api_key")
    assert TOKEN not in response.text


@pytest.mark.parametrize(("path", "headers", "body", "status", "type_"), [
    ("/v1/messages", {"x-api-key": "wrong"}, {}, 401, "authentication_error"),
    ("/v1/messages/count_tokens", {}, {}, 401, "authentication_error"),
    ("/v1/messages", {"x-api-key": TOKEN}, {"model": "no/such-model", "max_tokens": 4,
                                            "messages": []}, 404, "not_found_error"),
    ("/v1/messages", {"x-api-key": TOKEN}, {"max_tokens": 4}, 400, "invalid_request_error"),
    ("/v1/messages", {"x-api-key": TOKEN}, {"model": LOCAL, "max_tokens": 4, "messages": []},
     503, "overloaded_error"),  # not loaded
])
def test_messages_routes_answer_in_anthropics_envelope(client: TestClient, path: str,
                                                       headers: dict[str, str], body: dict,
                                                       status: int, type_: str) -> None:
    response = client.post(path, headers=headers, json=body)
    assert response.status_code == status, response.text
    assert response.json() == {"type": "error", "error": {"type": type_,
                                                          "message": response.json()["error"]["message"]}}
    assert response.json()["error"]["message"] and TOKEN not in response.text


def test_both_tokens_are_accepted(client: TestClient) -> None:
    assert client.get("/v1/models", headers=AUTH).status_code == 200
    assert client.get("/v1/models", headers={"Authorization": "Bearer other-token"}).status_code == 200


def test_model_list_and_info(client: TestClient) -> None:
    data = client.get("/v1/models", headers=AUTH).json()
    assert data["object"] == "list"
    ids = [m["id"] for m in data["data"]]
    assert DEFAULT_MODEL in ids and "meta-llama/Llama-2-70b-chat-hf" in ids
    assert all(set(m) == {"id", "object", "created", "owned_by"} for m in data["data"])
    info = client.get("/v1/models/meta-llama/Llama-2-70b-chat-hf", headers=AUTH).json()
    assert info["model"] == "meta-llama/Llama-2-70b-chat-hf"
    assert info["status"] == "unavailable" and info["gpu_memory_usage"] is None
    assert info["loaded_at"] is None and info["rate_limit_per_minute"] == 20
    assert client.get(f"/v1/models/{DEFAULT_MODEL}", headers=AUTH).json()["status"] == "not_loaded"


def test_unknown_model_is_404(client: TestClient) -> None:
    assert_envelope(client.get("/v1/models/nope/nothing", headers=AUTH), 404, "model_not_found")
    r = client.post("/v1/completions", headers=AUTH, json={"model": "nope", "prompt": "x"})
    assert_envelope(r, 404, "model_not_found", "model")


def test_model_without_weights_fails_at_once_with_a_clear_4xx(client: TestClient) -> None:
    r = client.post("/v1/completions", headers=AUTH,
                    json={"model": "meta-llama/Llama-2-70b-chat-hf", "prompt": "x"})
    error = assert_envelope(r, 404, "model_unavailable", "model")
    assert "not on this machine" in error["message"]


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": "x"}, "model"),
    ({"model": 5, "prompt": "x"}, "model"),
    ({"model": "", "prompt": "x"}, "model"),
    ({"model": DEFAULT_MODEL, "prompt": "x", "stream": "yes"}, "stream"),
])
def test_what_the_lab_reads_itself_is_checked_before_anything(client: TestClient, body: dict,
                                                               param: str) -> None:
    # Every other field is the engine's to judge (vLLM's own validation: tests/api/test_protocol.py).
    assert_envelope(client.post("/v1/completions", headers=AUTH, json=body), 400, param=param)


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b"null"])
def test_malformed_json_is_400(client: TestClient, raw: bytes) -> None:
    r = client.post("/v1/completions", headers={**AUTH, "Content-Type": "application/json"}, content=raw)
    assert_envelope(r, 400)


def test_unknown_route_and_method_use_the_envelope(client: TestClient) -> None:
    assert_envelope(client.get("/v1/nothing", headers=AUTH), 404)
    assert_envelope(client.get("/v1/completions", headers=AUTH), 405)


def test_a_model_not_loaded_is_503_with_retry_after(client: TestClient) -> None:
    # LOCAL has its weights here (MODEL_PATHS) and is not loaded: a 503, not a 404.
    assert client.get(f"/v1/models/{LOCAL}", headers=AUTH).json()["status"] == "not_loaded"
    r = client.post("/v1/completions", headers=AUTH, json={"model": LOCAL, "prompt": "x"})
    assert_envelope(r, 503, "model_not_ready")
    assert int(r.headers["Retry-After"]) >= 1 and "load it first" in r.json()["error"]["message"]


def test_secrets_never_reach_responses_logs_or_metrics(caplog: pytest.LogCaptureFixture) -> None:
    """The tokens and the Redis password, with Redis down and requests failing every way."""
    redis_password = "r3dis-pass-word"
    settings = Settings(MODEL="", VLLM_ENDPOINT="", METRICS_PORT=0, API_TOKEN=TOKEN,
                        REDIS_URL=f"redis://:{redis_password}@127.0.0.1:1/0",
                        REDIS_PASSWORD=redis_password, MODEL_PATHS={LOCAL: Path(__file__).parent})
    seen = []
    with caplog.at_level(logging.DEBUG), TestClient(create_app(settings, ui=False)) as c:
        textgen = c.app.state.textgen  # type: ignore[attr-defined]
        for headers in ({}, {"Authorization": "Bearer wrong"}, AUTH):
            for body in ({"model": LOCAL, "prompt": "x"}, {"model": "nope", "prompt": "x"},
                         {"prompt": "x"}, {"model": LOCAL, "stream": "no"}):
                seen.append(c.post("/v1/completions", headers=headers, json=body).text)
        seen += [c.get("/health").text, c.get("/ready").text,
                 c.get("/v1/models", headers=AUTH).text]
        seen.append(generate_latest(textgen.metrics.registry).decode())
    assert '"status":"degraded"' in seen[-4].replace(" ", "")  # Redis was down: it shows
    seen.append(caplog.text)
    for secret in (TOKEN, redis_password):
        assert not [text for text in seen if secret in text], secret
