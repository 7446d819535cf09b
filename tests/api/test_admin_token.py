"""ADMIN_TOKEN: only it may change what is loaded (models and adapters); API tokens get a 403
in the envelope there and keep every other route. No engine: the checks come before one is
needed. The same on the real engine, with an adapter that loads: tests/api/test_lora.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from textgen import Settings

API, ADMIN = "api-token-1", "admin-token-9"
LOCAL = "local/not-loaded"
CHANGES = [("/v1/models/local/not-loaded/load", {}), ("/v1/models/local/not-loaded/unload", {}),
           ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/nowhere"}),
           ("/v1/unload_lora_adapter", {"lora_name": "x"})]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def lab(**tokens: str) -> TestClient:
    settings = Settings(MODEL="", VLLM_ENDPOINT="", METRICS_PORT=0,
                        MODEL_PATHS={LOCAL: Path(__file__).parent}, **tokens)  # type: ignore[arg-type]
    return TestClient(create_app(settings, ui=False))


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with lab(API_TOKEN=API, ADMIN_TOKEN=ADMIN) as c:
        yield c


@pytest.mark.parametrize(("path", "body"), CHANGES)
def test_an_api_token_may_not_change_what_is_loaded(client: TestClient, path: str,
                                                    body: dict) -> None:
    response = client.post(path, json=body, headers=bearer(API))
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "admin_token_required")
    assert "ADMIN_TOKEN" in error["message"]
    assert API not in response.text and ADMIN not in response.text


@pytest.mark.parametrize(("path", "body"), CHANGES)
def test_an_unknown_token_is_still_a_401_there(client: TestClient, path: str, body: dict) -> None:
    assert client.post(path, json=body, headers=bearer("wrong")).status_code == 401
    assert client.post(path, json=body).status_code == 401


@pytest.mark.parametrize(("path", "body"), CHANGES)
def test_the_admin_token_passes(client: TestClient, path: str, body: dict) -> None:
    # Past the check, each route answers for itself: a folder that is no model, no adapter
    # at that path, an adapter that is not loaded. Never a 401 or 403.
    response = client.post(path, json=body, headers=bearer(ADMIN))
    assert response.status_code not in (401, 403), response.text


def test_the_admin_token_is_accepted_wherever_an_api_token_is(client: TestClient) -> None:
    for token in (API, ADMIN):
        assert client.get("/v1/models", headers=bearer(token)).status_code == 200
        assert client.get(f"/v1/models/{LOCAL}", headers=bearer(token)).status_code == 200


def test_in_an_open_lab_only_changes_need_the_admin_token() -> None:
    with lab(ADMIN_TOKEN=ADMIN) as open_lab:
        assert open_lab.get("/v1/models").status_code == 200
        refused = open_lab.post(f"/v1/models/{LOCAL}/unload")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "admin_token_required"
        passed = open_lab.post(f"/v1/models/{LOCAL}/unload", headers=bearer(ADMIN))
        assert passed.status_code not in (401, 403), passed.text


def test_without_an_admin_token_any_api_token_may_load_and_unload() -> None:
    with lab(API_TOKEN=API) as c:
        assert c.post(f"/v1/models/{LOCAL}/unload", headers=bearer(API)).status_code == 200


def test_the_admin_token_joins_the_accepted_tokens_only_when_there_are_api_tokens() -> None:
    assert Settings(API_TOKEN=API, ADMIN_TOKEN=ADMIN).api_tokens() == [API, ADMIN]  # type: ignore[arg-type]
    # Alone it closes nothing but loading: the lab stays open to generation.
    assert Settings(ADMIN_TOKEN=ADMIN).api_tokens() == []  # type: ignore[arg-type]
    assert Settings(ADMIN_TOKEN=ADMIN).admin_token() == ADMIN  # type: ignore[arg-type]
    assert Settings(ADMIN_TOKEN="").admin_token() is None  # type: ignore[arg-type]
