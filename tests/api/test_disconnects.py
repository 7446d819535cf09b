"""Clients that leave, and request ids, through a real uvicorn server (fake engines).

A fake engine stands in where the engine must be made slow on demand: a model load that
waits, a request held mid-stream (tests/support/fake_engines.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from tests.support.fake_engines import FakeStarter
from tests.support.upstreams import serve_app
from textgen import Settings, TextGen

MODEL = "local/fake"


@contextlib.asynccontextmanager
async def lab(tmp_path: Path, starter: FakeStarter) -> AsyncIterator[tuple[str, TextGen]]:
    settings = Settings(MODEL=MODEL, MODEL_PATHS={MODEL: tmp_path}, VLLM_ENDPOINT="",
                        METRICS_PORT=0, LOAD_WAIT_SECONDS=60)
    textgen = TextGen(settings, engine_starter=starter.start, engine_check=starter.check)
    app = create_app(ui=False, textgen=textgen)
    async with serve_app(app) as url:
        yield url, textgen


async def until(check, seconds: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_client_that_leaves_during_the_model_load_is_never_run(tmp_path: Path,
                                                                      stream: bool) -> None:
    starter = FakeStarter(slow=True)
    async with lab(tmp_path, starter) as (url, textgen):
        await asyncio.wait_for(starter.loading.wait(), 5)
        body = {"model": MODEL, "prompt": "x", "stream": stream}
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            request = asyncio.create_task(client.post("/v1/completions", json=body))
            await until(lambda: textgen.models.entry(MODEL).status == "loading")
            await asyncio.sleep(0.2)  # the request is in, waiting for the load
            request.cancel()  # the client hangs up: httpx closes the connection
            with contextlib.suppress(asyncio.CancelledError):
                await request
        await asyncio.sleep(0.2)  # the server notices the hang-up
        starter.let_load.set()
        await until(lambda: textgen.model_info(MODEL).status == "loaded")
        await asyncio.sleep(0.2)
        assert starter.engines[0].requests == [], "the abandoned request still ran"
        assert textgen.models.entry(MODEL).active == 0


async def test_the_request_id_is_the_clients_end_to_end(tmp_path: Path) -> None:
    starter = FakeStarter()
    async with lab(tmp_path, starter) as (url, textgen):
        await textgen.wait_ready()
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            given = await client.post("/v1/completions", headers={"X-Request-Id": "trace-42"},
                                      json={"model": MODEL, "prompt": "x"})
            made = await client.post("/v1/completions", json={"model": MODEL, "prompt": "y"})
    assert given.headers["x-request-id"] == "trace-42"
    assert starter.engines[0].request_ids[0] == "trace-42"  # the engine got the client's id
    assert made.headers["x-request-id"] == starter.engines[0].request_ids[1]
    assert len(made.headers["x-request-id"]) == 32
