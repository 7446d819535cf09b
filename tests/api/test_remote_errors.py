"""A remote backend through the API: what reaches it, what comes back, and what its failures become.

The client's body goes upstream as sent and the upstream's answer comes back as it sent it; a
backend that is down, slow or answers garbage gets our statuses, envelope, health and metrics.
A real vLLM cannot misbehave on demand (or hold an answer while we look), so these use fake
upstreams on loopback (tests/support/upstreams.py); our API runs for real under uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from api.app import create_app
from tests.support.upstreams import FakeUpstream, eventually, free_port, serve_app
from textgen import Settings, TextGen

MODEL = "fake/tiny-7b"
TOKEN = "errors-token"
TOOLS = [{"type": "function", "function": {"name": "capital", "parameters": {"type": "object"}}}]


@dataclass
class Lab:
    client: httpx.AsyncClient
    textgen: TextGen


@contextlib.asynccontextmanager
async def lab(*urls: str, read_timeout: float = 0.5, request_timeout: float = 30.0,
              cache: bool = False, **overrides: Any) -> AsyncIterator[Lab]:
    settings = Settings(
        VLLM_ENDPOINT=urls[0], VLLM_ENDPOINTS=list(urls[1:]), MODEL="", METRICS_PORT=0,
        API_TOKEN=TOKEN,  # type: ignore[arg-type]
        REMOTE_CONNECT_TIMEOUT_SECONDS=0.5, REMOTE_READ_TIMEOUT_SECONDS=read_timeout,
        REMOTE_REQUEST_TIMEOUT_SECONDS=request_timeout, REMOTE_DISCOVERY_INTERVAL_SECONDS=0.2,
        **overrides,
    )
    app = create_app(settings, ui=False)
    async with serve_app(app) as url:
        textgen: TextGen = app.state.textgen
        await asyncio.wait_for(textgen.backends.wait_discovered(), 5)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        if not cache:
            headers["Cache-Control"] = "no-cache, no-store"
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
            yield Lab(client, textgen)


def completion(**extra: object) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 8, **extra}


def chat(**extra: object) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}


def assert_envelope(response: httpx.Response, status: int, type_: str, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (type_, code)
    assert set(error) == {"message", "type", "param", "code"}
    return str(error["message"])


def events(response: httpx.Response) -> list[str]:
    """The data payloads of an event stream, `[DONE]` included."""
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


def in_flight(api: Lab) -> int:
    """Requests the backend's engine has open upstream (its model may be marked down)."""
    return api.textgen.backends.backends[0].in_flight()


# --- pass-through -------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "body_of"), [("/v1/completions", completion),
                                                ("/v1/chat/completions", chat)],
                         ids=["completions", "chat"])
async def test_the_clients_body_goes_upstream_unchanged_and_its_answer_comes_back(
    path: str, body_of: Any
) -> None:
    async with FakeUpstream() as fake, lab(fake.url) as api:
        body = body_of(
            temperature=0.0, seed=7, logprobs=None, tools=TOOLS, tool_choice="auto",
            response_format={"type": "json_schema",
                             "json_schema": {"name": "city", "schema": {"type": "object"}}},
            some_future_field={"nested": [1, 2.5, None, True, "x"]},
        )
        response = await api.client.post(path, json=body, headers={"X-Request-Id": "abc123"})
        assert response.status_code == 200, response.text
        assert fake.bodies == [body]  # unknown fields included, nothing added
        assert fake.headers[-1]["x-request-id"] == "abc123"
        # The upstream's JSON as it sent it: its id, usage and fingerprint.
        assert response.json() == fake.answers[-1]
        assert response.headers["x-request-id"] == "abc123"


@pytest.mark.parametrize(("path", "body_of"), [("/v1/completions", completion),
                                                ("/v1/chat/completions", chat)],
                         ids=["completions", "chat"])
@pytest.mark.parametrize("asked", [False, True], ids=["usage-not-asked", "usage-asked"])
async def test_a_stream_gets_the_usage_chunk_only_when_the_client_asked(
    path: str, body_of: Any, asked: bool
) -> None:
    async with FakeUpstream() as fake, lab(fake.url) as api:
        options = {"include_usage": asked}
        body = body_of(stream=True, stream_options=options, response_format={"type": "text"},
                       some_future_field=1)
        response = await api.client.post(path, json=copy.deepcopy(body))
        assert response.status_code == 200, response.text
        # Only include_usage is forced upstream: the lab counts tokens by the server's own.
        assert fake.bodies == [{**body, "stream_options": {"include_usage": True}}]
        data = events(response)
        assert data[-1] == "[DONE]"
        chunks = [json.loads(d) for d in data[:-1]]
        upstream = fake.answers[-1]
        assert "usage" in upstream[-1] and not upstream[-1]["choices"]
        if asked:
            assert chunks == upstream
        else:  # the usage chunk dropped; the fingerprint it carried moves to the last chunk
            fingerprint = upstream[-1]["system_fingerprint"]
            assert chunks == [*upstream[:-2], {**upstream[-2], "system_fingerprint": fingerprint}]
        completion_tokens = api.textgen.metrics.registry.get_sample_value(
            "text_generation_completion_tokens_total", {"model": MODEL})
        assert completion_tokens == 4


async def test_requests_that_differ_in_any_field_do_not_share_a_cache_entry() -> None:
    async with FakeUpstream() as fake, lab(fake.url, cache=True) as api:
        base = chat(max_tokens=8)
        variants = [
            base,
            {**base, "response_format": {"type": "json_object"}},
            {**base, "tools": TOOLS},
            {**base, "tools": TOOLS, "tool_choice": "required"},
            {**base, "some_future_field": "a"},
        ]

        async def cache_status(body: dict[str, Any]) -> str:
            response = await api.client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            return response.headers["X-Cache"]

        assert [await cache_status(body) for body in variants] == ["MISS"] * len(variants)
        assert fake.bodies == variants  # each went upstream
        # The same requests again, any order: each has its own entry.
        assert [await cache_status(body) for body in reversed(variants)] == ["HIT"] * len(variants)
        assert len(fake.bodies) == len(variants)


# --- the upstream's refusals: its status and message, in our envelope -----------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("status", "type_", "code", "param"),
    [
        (400, "invalid_request_error", "invalid_request", "max_tokens"),
        (404, "invalid_request_error", "model_not_found", "model"),
        (422, "invalid_request_error", "request_rejected", None),
        (501, "not_implemented_error", "request_rejected", None),
    ],
)
async def test_the_upstreams_refusals_keep_their_status_and_message(
    status: int, type_: str, code: str, param: str | None, stream: bool
) -> None:
    async with FakeUpstream() as fake, lab(fake.url) as api:
        fake.mode = f"error{status}"
        response = await api.client.post("/v1/completions", json=completion(stream=stream))
        message = assert_envelope(response, status, type_, code)
        assert message == f"fake upstream error {status}"
        assert response.json()["error"]["param"] == param
        assert "retry-after" not in response.headers
        # The client's mistake, not the backend's: its models stay up.
        assert (await api.client.get(f"/v1/models/{MODEL}")).json()["status"] == "loaded"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    ("upstream", "status", "type_", "code"),
    [
        (500, 502, "backend_error", "backend_unavailable"),
        (502, 502, "backend_error", "backend_unavailable"),
        (401, 502, "backend_error", "backend_unavailable"),  # our own credentials upstream
        (503, 503, "service_unavailable_error", "backend_down"),
        (429, 503, "service_unavailable_error", "engine_overloaded"),
        (504, 504, "backend_timeout_error", "backend_timeout"),
    ],
)
async def test_the_upstreams_failures_are_ours_to_report(
    upstream: int, status: int, type_: str, code: str, stream: bool
) -> None:
    async with FakeUpstream() as fake, lab(fake.url) as api:
        fake.mode = f"error{upstream}"
        response = await api.client.post("/v1/completions", json=completion(stream=stream))
        message = assert_envelope(response, status, type_, code)
        assert f"HTTP {upstream}" in message and fake.url in message
        if status == 503:
            assert int(response.headers["retry-after"]) >= 1
        assert in_flight(api) == 0


# --- failures -----------------------------------------------------------------------------


async def test_a_backend_that_is_down_is_a_503_with_retry_after_and_health_shows_it() -> None:
    port = free_port()
    async with FakeUpstream(port=port) as fake, lab(f"{fake.url}/v1/completions") as api:
        assert (await api.client.post("/v1/completions", json=completion())).status_code == 200
        await fake.stop()

        started = time.monotonic()
        response = await api.client.post("/v1/completions", json=completion())
        assert time.monotonic() - started < 1.0
        message = assert_envelope(response, 503, "service_unavailable_error", "backend_down")
        assert "cannot be reached" in message
        assert int(response.headers["retry-after"]) >= 1

        status = (await api.client.get(f"/v1/models/{MODEL}")).json()
        assert status["status"] == "error" and "cannot be reached" in status["reason"]
        health = (await api.client.get("/health")).json()
        assert health["status"] == "degraded"
        assert health["components"]["remote_backends"]["backends"][0]["status"] == "down"
        # The client library sees the same envelope on the chat route.
        response = await api.client.post("/v1/chat/completions", json=chat())
        assert_envelope(response, 503, "service_unavailable_error", "backend_down")
        errors = api.textgen.metrics.registry.get_sample_value(
            "text_backend_errors_total", {"backend": fake.url, "error_type": "backend_down"})
        assert errors is not None and errors >= 1

        # Back up: it recovers by itself, without a restart or a request to poke it.
        async with FakeUpstream(port=port):
            backends = api.textgen.backends
            await eventually(lambda: backends.health()["status"] == "ok")
            health = (await api.client.get("/health")).json()
            assert health["components"]["remote_backends"]["backends"][0]["status"] == "up"
            response = await api.client.post("/v1/completions", json=completion())
            assert response.status_code == 200
            assert response.json()["choices"][0]["text"] == "Paris is the capital"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_slow_backend_is_a_504_within_the_timeout(stream: bool) -> None:
    # A stream waits REMOTE_READ_TIMEOUT_SECONDS for each chunk, a plain answer
    # REMOTE_REQUEST_TIMEOUT_SECONDS for the whole of it.
    async with FakeUpstream() as fake, lab(fake.url, read_timeout=0.5, request_timeout=0.5) as api:
        fake.mode = "slow"
        started = time.monotonic()
        response = await api.client.post("/v1/completions", json=completion(stream=stream))
        assert time.monotonic() - started < 3.0
        assert_envelope(response, 504, "backend_timeout_error", "backend_timeout")
        await asyncio.wait_for(fake.disconnected.wait(), 5)  # given up upstream too


@pytest.mark.parametrize("mode", ["garbage", "bad_json", "cut", "error500"])
async def test_garbage_from_the_backend_is_a_502(mode: str) -> None:
    async with FakeUpstream() as fake, lab(fake.url) as api:
        fake.mode = mode
        response = await api.client.post("/v1/completions", json=completion())
        assert_envelope(response, 502, "backend_error", "backend_unavailable")
        response = await api.client.post("/v1/completions", json=completion(stream=True))
        # bad_json and cut fail after the first chunk has gone out: an error event, then [DONE].
        if mode in ("bad_json", "cut"):
            assert response.status_code == 200
            data = events(response)
            assert data[-1] == "[DONE]"
            assert json.loads(data[-2])["error"]["code"] == "backend_unavailable"
        else:
            assert_envelope(response, 502, "backend_error", "backend_unavailable")


async def test_a_stream_cut_short_ends_with_an_error_event_and_done() -> None:
    async with FakeUpstream() as fake, lab(fake.url) as api:
        fake.mode = "cut"
        response = await api.client.post("/v1/completions", json=completion(stream=True))
        assert response.status_code == 200  # the first chunk had already gone out
        data = events(response)
        assert json.loads(data[0])["choices"][0]["text"] == "Paris"
        error = json.loads(data[-2])["error"]
        assert (error["code"], error["type"]) == ("backend_unavailable", "backend_error")
        assert data[-1] == "[DONE]"


async def test_a_remote_model_cannot_be_unloaded_here() -> None:
    async with FakeUpstream() as fake, lab(fake.url) as api:
        response = await api.client.post(f"/v1/models/{MODEL}/unload")
        assert_envelope(response, 400, "invalid_request_error", "invalid_request")
        assert (await api.client.get(f"/v1/models/{MODEL}")).json()["status"] == "loaded"


async def test_textgen_models_lists_remote_models_with_their_status() -> None:
    async with FakeUpstream(models=(MODEL, "acme/Llama-3-8B-Instruct")) as fake:
        down = f"http://127.0.0.1:{free_port()}"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "api.cli", "models", "--model", "",
            "--vllm-endpoint", f"{fake.url}/v1/completions", "--vllm-endpoints", down,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines if not line.startswith("remote")}
    assert rows[MODEL][:3] == ["loaded", "7B", "base"]
    assert rows["acme/Llama-3-8B-Instruct"][:3] == ["loaded", "13B", "instruct"]
    assert f"remote backend {fake.url}: up" in lines
    assert any(line.startswith(f"remote backend {down}: down") for line in lines)


# --- a client that leaves -----------------------------------------------------------------


async def test_a_client_that_leaves_before_a_plain_answer_closes_the_upstream_request() -> None:
    async with FakeUpstream("hold") as fake, lab(fake.url, read_timeout=30.0) as api:
        post = asyncio.create_task(api.client.post("/v1/completions", json=completion()))
        await asyncio.wait_for(fake.holding.wait(), 5)  # the upstream is generating
        post.cancel()  # the client gives up waiting for the whole answer
        with contextlib.suppress(asyncio.CancelledError):
            await post
        await asyncio.wait_for(fake.disconnected.wait(), 5)
        assert fake.disconnects == 1 and not fake.release.is_set()
        await eventually(lambda: in_flight(api) == 0)


@pytest.mark.parametrize("read_first", [True, False], ids=["after-a-chunk", "before-any-chunk"])
async def test_a_client_that_leaves_a_stream_closes_the_upstream_request(read_first: bool) -> None:
    async with FakeUpstream("hold") as fake, lab(fake.url, read_timeout=30.0) as api:
        fake.hold_after = 1 if read_first else 0
        async with api.client.stream("POST", "/v1/completions",
                                     json=completion(stream=True)) as response:
            assert response.status_code == 200
            await asyncio.wait_for(fake.holding.wait(), 5)
            if read_first:
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        break
        await asyncio.wait_for(fake.disconnected.wait(), 5)
        assert fake.disconnects == 1 and not fake.release.is_set()
        await eventually(lambda: in_flight(api) == 0)
        await eventually(lambda: fake.open_connections == 0)


async def test_the_generation_routes_still_need_the_token() -> None:
    async with FakeUpstream() as fake, lab(fake.url) as api:
        for path, body in (("/v1/completions", completion()), ("/v1/chat/completions", chat())):
            for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
                response = await api.client.post(path, json=body, headers=headers)
                assert_envelope(response, 401, "authentication_error", "invalid_api_key")
        assert fake.bodies == []  # nothing reached the backend
