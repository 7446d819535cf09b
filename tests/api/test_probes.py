"""GET /health (liveness) and GET /ready (readiness) as Kubernetes and compose use them.

Fake engines (tests/support/fake_engines.py) make a load slow and an engine die on demand;
the real engine dying: tests/api/test_engine_lifecycle.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from api.app import create_app
from tests.support.fake_engines import FakeStarter
from textgen import Settings, TextGen

MODEL = "local/fake"


async def test_ready_waits_for_the_default_model_and_health_does_not(tmp_path: Path) -> None:
    starter = FakeStarter(slow=True)
    settings = Settings(MODEL=MODEL, MODEL_PATHS={MODEL: tmp_path}, VLLM_ENDPOINT="",
                        METRICS_PORT=0)
    textgen = TextGen(settings, engine_starter=starter.start)
    app = create_app(ui=False, textgen=textgen)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://lab") as client:
        await asyncio.wait_for(starter.loading.wait(), 5)
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.headers["Retry-After"] == "5"
        assert ready.json() == {"status": "not_ready",
                                "reasons": [f"the default model {MODEL} is loading"]}
        assert (await client.get("/health")).status_code == 200  # alive while it loads
        starter.let_load.set()
        await textgen.wait_ready()
        assert (await client.get("/ready")).json() == {"status": "ready", "reasons": []}

        starter.engines[0].dead = True
        health = await client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "error"
        assert (await client.get("/ready")).status_code == 503

        textgen.begin_drain()
        assert "the lab is stopping" in (await client.get("/ready")).json()["reasons"]


async def test_metrics_listen_where_the_api_does_unless_told() -> None:
    from tests.support.processes import free_port

    for given, bound in ((None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")):
        textgen = TextGen(Settings(MODEL="", VLLM_ENDPOINT="", METRICS_PORT=free_port(),
                                   METRICS_HOST=given))
        await textgen.start()
        try:
            # A laptop lab keeps its metrics on loopback, as its API (API_HOST 127.0.0.1).
            assert textgen._metrics_server.server_address[0] == bound
        finally:
            await textgen.close()
