"""X-Request-Id on every response (api/request_ids.py), in-process, no engine but a fake one.

A fake engine (tests/support/fake_engines.py) shows which id reached the engine; the same
through a real uvicorn server and a remote upstream: tests/api/test_disconnects.py and
tests/api/test_remote_errors.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.support.fake_engines import FakeStarter
from textgen import Settings, TextGen

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MADE = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(MODEL="", VLLM_ENDPOINT="", METRICS_PORT=0, API_TOKEN=TOKEN,
                        MAX_REQUEST_BYTES=1024)
    app = create_app(settings, ui=False)

    @app.get("/boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def ids(response: httpx.Response) -> list[str]:
    return response.headers.get_list("x-request-id")


# Each kind of response: probes, a route, the redirect, and errors from every layer — the
# token check, the router (404, 405), the body limit (413), parsing and validation (400) and
# Starlette's outermost error handler (500).
CALLS = {
    "health": ("GET", "/health", {}, None, 200),
    "ready": ("GET", "/ready", {}, None, 200),
    "models": ("GET", "/v1/models", AUTH, None, 200),
    "redirect": ("GET", "/", {}, None, 307),
    "no token": ("GET", "/v1/models", {}, None, 401),
    "unknown route": ("GET", "/v1/nothing", AUTH, None, 404),
    "unknown model": ("GET", "/v1/models/nope/nothing", AUTH, None, 404),
    "wrong method": ("GET", "/v1/completions", AUTH, None, 405),
    "too large": ("POST", "/v1/completions", AUTH, b"{" + b" " * 2000 + b"}", 413),
    "bad json": ("POST", "/v1/completions", AUTH, b"{not json", 400),
    "no model": ("POST", "/v1/completions", AUTH, b'{"prompt": "x"}', 400),
    "server error": ("GET", "/boom", {}, None, 500),
}


def call(client: TestClient, name: str, headers: dict[str, str]) -> httpx.Response:
    method, path, auth, body, status = CALLS[name]
    response = client.request(method, path, headers={**auth, **headers}, content=body,
                              follow_redirects=False)
    assert response.status_code == status, response.text
    return response


@pytest.mark.parametrize("name", list(CALLS))
def test_the_clients_id_is_echoed_once_on_every_response(client: TestClient, name: str) -> None:
    assert ids(call(client, name, {"X-Request-Id": "trace-42/a.b_c:d"})) == ["trace-42/a.b_c:d"]


@pytest.mark.parametrize("name", list(CALLS))
def test_an_id_is_made_when_none_is_given(client: TestClient, name: str) -> None:
    first, second = ids(call(client, name, {})), ids(call(client, name, {}))
    assert len(first) == len(second) == 1 and first != second
    assert MADE.fullmatch(first[0]) and MADE.fullmatch(second[0])


@pytest.mark.parametrize("given", ["x" * 129, "a\x01b", "a\x7fb", "tab\there", "with space",
                                   "caf\u00e9", ""], ids=repr)
def test_an_unfit_id_is_replaced(client: TestClient, given: str) -> None:
    # Sent as the raw bytes a client could put on the wire (latin-1, as HTTP carries them).
    response = client.get("/health", headers=[(b"X-Request-Id", given.encode("latin-1"))])
    assert len(ids(response)) == 1 and MADE.fullmatch(ids(response)[0])


def test_the_longest_fit_id_is_kept(client: TestClient) -> None:
    assert ids(client.get("/health", headers={"X-Request-Id": "x" * 128})) == ["x" * 128]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_generation_sends_one_id_the_same_as_the_engines(tmp_path: Path,
                                                                 stream: bool) -> None:
    model = "local/fake"
    starter = FakeStarter()
    settings = Settings(MODEL=model, MODEL_PATHS={model: tmp_path}, VLLM_ENDPOINT="",
                        METRICS_PORT=0)
    textgen = TextGen(settings, engine_starter=starter.start, engine_check=starter.check)
    app = create_app(ui=False, textgen=textgen)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://lab") as client:
        await textgen.wait_ready()
        echoed = []
        for headers in ({"X-Request-Id": "trace-7"}, {}, {"X-Request-Id": "x" * 200}):
            body = {"model": model, "prompt": "x", "stream": stream,
                    "n": len(echoed) + 1}  # no cache hits: each one reaches the engine
            response = await client.post("/v1/completions", headers=headers, json=body)
            assert response.status_code == 200 and response.headers["x-cache"] == "MISS"
            assert len(ids(response)) == 1
            echoed += ids(response)
    assert echoed[0] == "trace-7"
    assert MADE.fullmatch(echoed[1]) and MADE.fullmatch(echoed[2])
    assert starter.engines[0].request_ids == echoed  # the engine got the echoed ids
