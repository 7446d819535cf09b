"""A remote model's replicas through the API: /v1/models/{id} and /health show each one with its
state and load, and a replica that dies mid-stream ends the stream with an error event.

Fake upstreams on loopback (they can die on demand); our API runs for real under uvicorn. The
same against real vLLM servers: tests/textgen/test_remote_replicas_vllm.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx

from api.app import create_app
from tests.support.upstreams import FakeUpstream, eventually, free_port, serve_app
from textgen import Settings, TextGen

MODEL = "fake/tiny-7b"
TOKEN = "replicas-token"


@contextlib.asynccontextmanager
async def lab(*urls: str) -> AsyncIterator[tuple[httpx.AsyncClient, TextGen]]:
    settings = Settings(
        VLLM_ENDPOINT=urls[0], VLLM_ENDPOINTS=list(urls[1:]), MODEL="", METRICS_PORT=0,
        API_TOKEN=TOKEN,  # type: ignore[arg-type]
        REMOTE_CONNECT_TIMEOUT_SECONDS=0.5, REMOTE_READ_TIMEOUT_SECONDS=5.0,
        REMOTE_ROUTING_POLICY="round_robin", REMOTE_LOAD_METRICS_INTERVAL_SECONDS=0.1,
    )
    app = create_app(settings, ui=False)
    async with serve_app(app) as url:
        textgen: TextGen = app.state.textgen
        await asyncio.wait_for(textgen.backends.wait_discovered(), 5)
        headers = {"Authorization": f"Bearer {TOKEN}", "Cache-Control": "no-cache, no-store"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
            yield client, textgen


def port_after(port: int) -> int:
    """A free port whose URL sorts after `port`'s: replicas are kept in URL order, so round
    robin's first choice is then the replica on `port`."""
    while str(candidate := free_port()) <= str(port):
        pass
    return candidate


async def test_model_status_and_health_show_each_replica_with_its_state_and_load() -> None:
    async with FakeUpstream("hold") as a, FakeUpstream(port=port_after(a.port)) as b:
        a.waiting = 4
        async with lab(a.url, b.url) as (client, textgen):
            await eventually(lambda: any(r.waiting == 4 for r in
                                         textgen.model_info(MODEL).replicas))
            held = asyncio.create_task(client.post("/v1/completions", json={
                "model": MODEL, "prompt": "x"}))
            await asyncio.wait_for(a.holding.wait(), 5)
            await b.stop()
            await textgen.backends.discover()  # b's probe fails: down

            status = (await client.get(f"/v1/models/{MODEL}")).json()
            assert (status["status"], status["backend"], status["routing"]) == (
                "loaded", "remote", "round_robin")
            replicas = {r["url"]: r for r in status["replicas"]}
            assert replicas[a.url]["status"] == "up" and replicas[a.url]["in_flight"] == 1
            assert replicas[a.url]["waiting"] == 4 and replicas[a.url]["kv_cache_usage"] == 0.25
            assert replicas[b.url]["status"] == "down"
            assert "cannot be reached" in replicas[b.url]["error"]

            health = (await client.get("/health")).json()
            assert health["status"] == "degraded"
            backends = {b["url"]: b for b in health["components"]["remote_backends"]["backends"]}
            assert backends[a.url]["status"] == "up" and backends[b.url]["status"] == "down"
            assert backends[a.url]["replicas"][0]["in_flight"] == 1
            a.release.set()
            assert (await held).status_code == 200


async def test_a_replica_that_dies_mid_stream_ends_it_with_an_error_event() -> None:
    async with FakeUpstream("hold") as fake, lab(fake.url) as (client, _):
        async with client.stream("POST", "/v1/completions", json={
            "model": MODEL, "prompt": "x", "stream": True}) as response:
            assert response.status_code == 200
            await asyncio.wait_for(fake.holding.wait(), 5)
            await fake.stop()  # the server dies with the stream open
            data = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]
        assert json.loads(data[0])["choices"][0]["text"] == "Paris"
        assert json.loads(data[-2])["error"]["code"] == "backend_unavailable"
        assert data[-1] == "[DONE]"
