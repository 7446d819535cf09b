"""Single flight: identical requests in flight share one generation (fake engines).

The real engine's side: tests/api/test_cache_limits.py sends identical requests at once to
the lab.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_engines import FakeEngine, FakeStarter
from textgen import GenerationInterrupted, OpenAIRequest, Settings, TextGen

MODEL = "local/fake"


@contextlib.asynccontextmanager
async def lab(tmp_path: Path) -> AsyncIterator[tuple[TextGen, FakeEngine]]:
    starter = FakeStarter()
    settings = Settings(MODEL=MODEL, MODEL_PATHS={MODEL: tmp_path}, VLLM_ENDPOINT="",
                        METRICS_PORT=0, UNLOAD_DRAIN_SECONDS=0.1)
    tg = TextGen(settings, engine_starter=starter.start)
    await tg.start()
    try:
        yield tg, starter.engines[0]
    finally:
        await tg.close()


def request(stream: bool, prompt: str = "hold", **headers: bool) -> OpenAIRequest:
    return OpenAIRequest("completions", {"model": MODEL, "prompt": prompt, "stream": stream},
                         **headers)


async def read_all(tg: TextGen, req: OpenAIRequest) -> tuple[str, Any]:
    generation = await tg.open(req)
    if not req.stream:
        return generation.cache_status, generation.response
    return generation.cache_status, [chunk async for chunk in generation.chunks()]


def shared(tg: TextGen) -> float:
    return tg.metrics.registry.get_sample_value("text_single_flight_shared_total",
                                                {"model": MODEL}) or 0.0


async def test_identical_requests_at_once_cost_one_generation(tmp_path: Path) -> None:
    async with lab(tmp_path) as (tg, engine):
        tasks = [asyncio.create_task(read_all(tg, request(False))) for _ in range(8)]
        await asyncio.wait_for(engine.holding.wait(), 5)
        await asyncio.sleep(0.05)  # all eight are in
        engine.release.set()
        results = await asyncio.gather(*tasks)
    assert len(engine.requests) == 1
    assert sorted(status for status, _ in results) == ["MISS"] + ["SHARED"] * 7
    texts = {r["choices"][0]["text"] for _, r in results}
    assert texts == {"Hello world"}
    assert len({r["id"] for _, r in results}) == 8  # each answer its own id
    assert shared(tg) == 7


async def test_a_streamed_follower_gets_every_chunk_live(tmp_path: Path) -> None:
    async with lab(tmp_path) as (tg, engine):
        leader = await tg.open(request(True))
        leader_chunks = leader.chunks()
        first = await anext(leader_chunks)  # the leader is mid-stream, held by the engine
        await asyncio.wait_for(engine.holding.wait(), 5)
        follower = await tg.open(request(True))
        assert follower.cache_status == "SHARED"
        follower_chunks = follower.chunks()
        assert (await anext(follower_chunks))["choices"][0]["text"] == "Hello"  # from the start
        engine.release.set()
        rest = [c async for c in leader_chunks]
        theirs = [c async for c in follower_chunks]
    assert [c["choices"][0]["text"] for c in [first, *rest]] == ["Hello", " world"]
    assert [c["choices"][0]["text"] for c in theirs] == [" world"]
    assert first["id"] != theirs[0]["id"]
    assert len(engine.requests) == 1


async def test_a_follower_that_leaves_does_not_stop_the_leader(tmp_path: Path) -> None:
    async with lab(tmp_path) as (tg, engine):
        leader = asyncio.create_task(read_all(tg, request(True)))
        await asyncio.wait_for(engine.holding.wait(), 5)
        follower = await tg.open(request(True))
        await follower.aclose()  # the follower's client hangs up
        engine.release.set()
        status, chunks = await leader
    assert status == "MISS" and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert engine.aborted == 0


async def test_the_generation_goes_on_for_followers_when_the_leader_leaves(tmp_path: Path) -> None:
    async with lab(tmp_path) as (tg, engine):
        leader = await tg.open(request(True))
        await asyncio.wait_for(engine.holding.wait(), 5)
        follower = asyncio.create_task(read_all(tg, request(False)))
        await asyncio.sleep(0.05)
        await leader.aclose()  # the leader's client hangs up: one reader remains
        assert engine.aborted == 0
        engine.release.set()
        status, response = await follower
        assert status == "SHARED" and response["choices"][0]["text"] == "Hello world"
        # The generation ran to its end: it was cached for the next one.
        assert (await tg.open(request(False))).cache_status == "HIT"


async def test_when_every_reader_leaves_the_engine_stops(tmp_path: Path) -> None:
    async with lab(tmp_path) as (tg, engine):
        readers = [await tg.open(request(True)) for _ in range(3)]
        await asyncio.wait_for(engine.holding.wait(), 5)
        for reader in readers:
            await reader.aclose()
        for _ in range(100):
            if engine.aborted:
                break
            await asyncio.sleep(0.01)
        assert engine.aborted == 1 and tg.models.entry(MODEL).active == 0
        assert (await tg.open(request(False, "other"))).cache_status == "MISS"
        assert len(tg.pipeline.flights) == 0


async def test_no_cache_opts_out(tmp_path: Path) -> None:
    async with lab(tmp_path) as (tg, engine):
        tasks = [asyncio.create_task(read_all(tg, request(False, read_cache=False)))
                 for _ in range(2)]
        await asyncio.wait_for(engine.holding.wait(), 5)
        await asyncio.sleep(0.05)
        engine.release.set()
        results = await asyncio.gather(*tasks)
    assert [status for status, _ in results] == ["BYPASS", "BYPASS"]
    assert len(engine.requests) == 2


async def test_followers_get_the_form_they_asked_for(tmp_path: Path) -> None:
    async with lab(tmp_path) as (tg, engine):
        leader = asyncio.create_task(read_all(tg, request(False)))  # a plain generation
        await asyncio.wait_for(engine.holding.wait(), 5)
        streamed = asyncio.create_task(read_all(tg, request(True)))
        await asyncio.sleep(0.05)
        engine.release.set()
        _, plain = await leader
        status, chunks = await streamed
    assert status == "SHARED"
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "Hello world"
    assert chunks[0]["object"] == "text_completion" and plain["usage"]["total_tokens"] == 4


async def test_an_interrupted_generation_fails_every_reader(tmp_path: Path) -> None:
    async with lab(tmp_path) as (tg, engine):
        tasks = [asyncio.create_task(read_all(tg, request(flag))) for flag in (True, False)]
        await asyncio.wait_for(engine.holding.wait(), 5)
        await asyncio.sleep(0.05)
        await tg.unload(MODEL)
        for task in tasks:
            with pytest.raises(GenerationInterrupted):
                await task
