"""A remote backend that is down, slow or answers garbage: statuses, envelope, health, metrics.

A real vLLM cannot misbehave on demand, so these use fake upstreams on loopback
(tests/support/upstreams.py); our API runs for real under uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from api.app import create_app
from tests.support.upstreams import FakeUpstream, free_port, serve_app
from textgen import Settings, TextGen

MODEL = "fake/tiny-7b"
TOKEN = "errors-token"


@dataclass
class Lab:
    client: httpx.AsyncClient
    textgen: TextGen


@contextlib.asynccontextmanager
async def lab(*urls: str, read_timeout: float = 0.5) -> AsyncIterator[Lab]:
    settings = Settings(
        VLLM_ENDPOINT=urls[0], VLLM_ENDPOINTS=list(urls[1:]), MODEL="", METRICS_PORT=0,
        API_TOKEN=TOKEN,  # type: ignore[arg-type]
        REMOTE_CONNECT_TIMEOUT_SECONDS=0.5, REMOTE_READ_TIMEOUT_SECONDS=read_timeout,
        REMOTE_DISCOVERY_INTERVAL_SECONDS=0.2,
    )
    app = create_app(settings, ui=False)
    async with serve_app(app) as url:
        textgen: TextGen = app.state.textgen
        await asyncio.wait_for(textgen.backends.wait_discovered(), 5)
        headers = {"Authorization": f"Bearer {TOKEN}", "Cache-Control": "no-cache, no-store"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
            yield Lab(client, textgen)


def completion(**extra: object) -> dict[str, object]:
    return {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 8, **extra}


def assert_envelope(response: httpx.Response, status: int, type_: str, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (type_, code)
    assert set(error) == {"message", "type", "param", "code"}
    return str(error["message"])


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
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        response = await api.client.post("/v1/chat/completions", json=chat)
        assert_envelope(response, 503, "service_unavailable_error", "backend_down")
        errors = api.textgen.metrics.registry.get_sample_value(
            "text_backend_errors_total", {"backend": fake.url, "error_type": "backend_down"})
        assert errors is not None and errors >= 1

        # Back up: it recovers by itself, without a restart or a request to poke it.
        async with FakeUpstream(port=port):
            for _ in range(50):
                health = (await api.client.get("/health")).json()
                if health["status"] == "ok":
                    break
                await asyncio.sleep(0.1)
            assert health["components"]["remote_backends"]["backends"][0]["status"] == "up"
            response = await api.client.post("/v1/completions", json=completion())
            assert response.status_code == 200
            assert response.json()["choices"][0]["text"] == "Paris is the capital"


async def test_a_slow_backend_is_a_504_within_the_timeout() -> None:
    async with FakeUpstream() as fake, lab(fake.url, read_timeout=0.5) as api:
        fake.mode = "slow"
        started = time.monotonic()
        response = await api.client.post("/v1/completions", json=completion())
        assert time.monotonic() - started < 2.0
        assert_envelope(response, 504, "backend_timeout_error", "backend_timeout")


@pytest.mark.parametrize("mode", ["garbage", "bad_json", "error500"])
async def test_garbage_from_the_backend_is_a_502(mode: str) -> None:
    async with FakeUpstream() as fake, lab(fake.url) as api:
        fake.mode = mode
        response = await api.client.post("/v1/completions", json=completion())
        assert_envelope(response, 502, "backend_error", "backend_unavailable")
        response = await api.client.post("/v1/completions", json=completion(stream=True))
        # bad_json fails after the first chunk has gone out: an error event, then [DONE].
        if response.status_code == 200:
            events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            assert json.loads(events[-2])["error"]["code"] == "backend_unavailable"
        else:
            assert_envelope(response, 502, "backend_error", "backend_unavailable")


async def test_a_stream_cut_short_ends_with_an_error_event_and_done() -> None:
    async with FakeUpstream() as fake, lab(fake.url) as api:
        fake.mode = "cut"
        response = await api.client.post("/v1/completions", json=completion(stream=True))
        assert response.status_code == 200  # the first chunk had already gone out
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert json.loads(events[0])["choices"][0]["text"] == "Paris"
        assert json.loads(events[-2])["error"]["code"] == "backend_unavailable"
        assert events[-1] == "[DONE]"


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



async def test_a_client_that_leaves_closes_the_upstream_request() -> None:
    async with FakeUpstream("drip") as fake, lab(fake.url, read_timeout=5.0) as api:
        fake.drip_chunks, fake.drip_seconds = 400, 0.02  # ~8 s of generation upstream
        # Not streamed: the client gives up waiting for the whole answer.
        with pytest.raises(httpx.ReadTimeout):
            await api.client.post("/v1/completions", json=completion(), timeout=0.5)
        await asyncio.wait_for(fake.disconnected.wait(), 3.0)
        # Streamed: the client hangs up after a few chunks.
        fake.disconnected.clear()
        async with api.client.stream("POST", "/v1/completions",
                                     json=completion(stream=True)) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    break
        await asyncio.wait_for(fake.disconnected.wait(), 3.0)
        assert fake.disconnects == 2


async def test_the_generation_routes_still_need_the_token() -> None:
    async with FakeUpstream() as fake, lab(fake.url) as api:
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        for path, body in (("/v1/completions", completion()), ("/v1/chat/completions", chat)):
            for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
                response = await api.client.post(path, json=body, headers=headers)
                assert_envelope(response, 401, "authentication_error", "invalid_api_key")
        assert fake.bodies == []  # nothing reached the backend
