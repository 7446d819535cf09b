"""The model and request lifecycle in the core, with fake engines (tests/support/fake_engines).

Unloads and evictions drain or end the requests running on an engine, never leave a stream
waiting; a load that cannot succeed keeps the loaded model; loads are owned and cancelled;
a dead engine shows; stopped engines are collected; admission does not spend quota on a 503.
The real engine's side of each: tests/api/test_engine_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_engines import FakeStarter
from textgen import (
    EngineOverloaded,
    GenerationInterrupted,
    ModelLoadFailed,
    ModelNotReady,
    OpenAIRequest,
    Settings,
    TextGen,
)

A, B, C = "local/a", "local/b", "local/c"


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    paths = {m: tmp_path / m.replace("/", "_") for m in (A, B, C)}
    for path in paths.values():
        path.mkdir(exist_ok=True)
    values: dict[str, Any] = {"MODEL": "", "VLLM_ENDPOINT": "", "METRICS_PORT": 0,
                              "MODEL_PATHS": {**paths, **overrides.pop("MODEL_PATHS", {})}, "MAX_LOADED_MODELS": 1,
                              "UNLOAD_DRAIN_SECONDS": 0.2, **overrides}
    return Settings(**values)


@contextlib.asynccontextmanager
async def lab(tmp_path: Path, starter: FakeStarter | None = None,
              **overrides: Any) -> AsyncIterator[tuple[TextGen, FakeStarter]]:
    starter = starter or FakeStarter()
    tg = TextGen(settings(tmp_path, **overrides), engine_starter=starter.start,
                 engine_check=starter.check)
    await tg.start()
    try:
        yield tg, starter
    finally:
        await tg.close()


def held_stream(model: str) -> OpenAIRequest:
    return OpenAIRequest("completions", {"model": model, "prompt": "hold", "stream": True},
                         read_cache=False, write_cache=False)


async def read(tg: TextGen, request: OpenAIRequest) -> list[dict[str, Any]]:
    return [chunk async for chunk in tg.stream(request)]


def in_flight(tg: TextGen, model: str) -> float:
    return tg.metrics.registry.get_sample_value("text_generation_requests_in_flight",
                                                {"model": model}) or 0.0


async def test_unloading_ends_a_running_stream_with_an_error_not_a_hang(tmp_path: Path) -> None:
    async with lab(tmp_path) as (tg, starter):
        await tg.load(A)
        reader = asyncio.create_task(read(tg, held_stream(A)))
        engine = starter.engines[0]
        await asyncio.wait_for(engine.holding.wait(), 5)
        info = await asyncio.wait_for(tg.unload(A), 5)  # drains 0.2 s, then interrupts
        assert info.status == "not_loaded" and engine.closed == 1
        with pytest.raises(GenerationInterrupted, match="unloaded on request"):
            await asyncio.wait_for(reader, 5)
        assert in_flight(tg, A) == 0 and tg.models.entry(A).active == 0
        assert tg.history[-1].outcome == "generation_interrupted"


async def test_an_unload_lets_running_requests_finish_within_the_drain(tmp_path: Path) -> None:
    async with lab(tmp_path, UNLOAD_DRAIN_SECONDS=10) as (tg, starter):
        await tg.load(A)
        reader = asyncio.create_task(read(tg, held_stream(A)))
        engine = starter.engines[0]
        await asyncio.wait_for(engine.holding.wait(), 5)
        unload = asyncio.create_task(tg.unload(A))
        await asyncio.sleep(0)  # the unload has started draining
        assert tg.model_info(A).status == "unloading"
        with pytest.raises(ModelNotReady, match="being unloaded"):  # no new request meanwhile
            await tg.complete(OpenAIRequest.completion(model=A, prompt="x"))
        engine.release.set()
        chunks = await asyncio.wait_for(reader, 5)
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"  # it finished, whole
        assert (await asyncio.wait_for(unload, 5)).status == "not_loaded"


async def test_eviction_picks_an_idle_model_over_a_busy_one(tmp_path: Path) -> None:
    async with lab(tmp_path, MAX_LOADED_MODELS=2) as (tg, starter):
        await tg.load(A)  # A is the least recently loaded...
        await tg.load(B)
        reader = asyncio.create_task(read(tg, held_stream(A)))  # ...but A streams now
        await asyncio.wait_for(starter.engines[0].holding.wait(), 5)
        await tg.complete(OpenAIRequest.completion(model=B, prompt="x"))  # B used after A began
        await tg.load(C)
        assert (tg.model_info(A).status, tg.model_info(B).status) == ("loaded", "not_loaded")
        starter.engines[0].release.set()
        assert (await reader)[-1]["choices"][0]["finish_reason"] == "stop"


async def test_a_model_that_cannot_load_does_not_evict_the_loaded_one(tmp_path: Path) -> None:
    async with lab(tmp_path, FakeStarter(broken=(B,))) as (tg, starter):
        await tg.load(A)
        with pytest.raises(ModelLoadFailed, match="no model vLLM can load"):
            await tg.load(B)
        assert tg.model_info(A).status == "loaded" and starter.engines[0].closed == 0
        info = tg.model_info(B)
        assert info.status == "error" and "no model vLLM can load" in (info.reason or "")
        answer = await tg.complete(OpenAIRequest.completion(model=A, prompt="still here"))
        assert answer["choices"][0]["text"] == "Hello world"


async def test_a_dead_engine_is_seen_and_a_reload_brings_it_back(tmp_path: Path) -> None:
    async with lab(tmp_path, MODEL=A) as (tg, starter):
        assert tg.readiness() == []
        starter.engines[0].dead = True
        health = tg.health()
        assert health["engines"] == {"status": "error", "died": [A]}
        assert tg.model_info(A).status == "error" and "died" in (tg.model_info(A).reason or "")
        assert any("error" in reason for reason in tg.readiness())
        with pytest.raises(ModelNotReady, match="engine died"):
            await tg.complete(OpenAIRequest.completion(model=A, prompt="x"))
        await tg.load(A)
        assert tg.readiness() == [] and "engines" not in tg.health()
        assert len(starter.engines) == 2 and starter.engines[0].closed == 1


async def test_an_unloaded_engine_is_collected(tmp_path: Path) -> None:
    async with lab(tmp_path) as (tg, starter):
        await tg.load(A)  # the load freezes what exists into the GC's permanent generation
        gone = weakref.ref(starter.engines.pop())
        await tg.unload(A)
        gc.collect()
        assert gone() is None, "the stopped engine (a reference cycle) was never collected"


async def test_a_load_cancelled_at_shutdown_leaves_no_engine_and_no_loading_state(
        tmp_path: Path) -> None:
    starter = FakeStarter(slow=True)
    tg = TextGen(settings(tmp_path), engine_starter=starter.start, engine_check=starter.check)
    await tg.start()
    load = asyncio.create_task(tg.load(A))  # as POST /v1/models/{id}/load starts one
    await asyncio.wait_for(starter.loading.wait(), 5)
    load.cancel()  # the client left: the load goes on, owned by the registry
    await asyncio.sleep(0)
    assert tg.model_info(A).status == "loading"
    closing = asyncio.create_task(tg.close())
    await asyncio.sleep(0.05)
    starter.let_load.set()  # the engine comes up after the lab began to stop...
    await asyncio.wait_for(closing, 5)
    assert [e.closed for e in starter.engines] == [1]  # ...and is stopped, not leaked
    assert tg.model_info(A).status == "not_loaded"


async def test_a_503_for_capacity_does_not_spend_quota(tmp_path: Path) -> None:
    async with lab(tmp_path, MODEL=A, MAX_CONCURRENT_REQUESTS=1, RATE_LIMITS={A: 2}) as (tg, st):
        reader = asyncio.create_task(read(tg, held_stream(A)))
        await asyncio.wait_for(st.engines[0].holding.wait(), 5)
        for _ in range(3):
            with pytest.raises(EngineOverloaded):
                await tg.complete(OpenAIRequest.completion(model=A, prompt="busy"))
        st.engines[0].release.set()
        await reader
        # One admitted request of a limit of 2: one slot left, the three 503s spent none.
        decision = await tg.limiter.hit(A, 2)
        assert decision.admitted and decision.remaining == 0


async def test_the_weights_behind_a_model_are_part_of_the_cache_key(tmp_path: Path,
                                                                    redis_url: str) -> None:
    """Two labs on one Redis serve the same id from different folders (MODEL_PATHS changed
    across a restart, or replicas deployed apart): neither gets the other's answers."""
    request = OpenAIRequest.completion(model=A, prompt=f"same {tmp_path.name}", temperature=0)
    async with lab(tmp_path, MODEL=A, REDIS_URL=redis_url) as (tg, _):
        assert (await tg.open(request)).cache_status == "MISS"
        assert (await tg.open(request)).cache_status == "HIT"
    other = tmp_path / "other"
    other.mkdir()
    async with lab(tmp_path, MODEL=A, REDIS_URL=redis_url,
                   MODEL_PATHS={A: other}) as (tg, _):
        assert (await tg.open(request)).cache_status == "MISS"
        assert (await tg.open(request)).cache_status == "HIT"


async def test_sampled_requests_can_always_be_fresh(tmp_path: Path) -> None:
    async with lab(tmp_path, MODEL=A, CACHE_SAMPLED=False) as (tg, _):
        sampled = OpenAIRequest.completion(model=A, prompt="p", temperature=0.8)
        assert [(await tg.open(sampled)).cache_status for _ in range(2)] == ["BYPASS", "BYPASS"]
        seeded = OpenAIRequest.completion(model=A, prompt="p", temperature=0.8, seed=3)
        greedy = OpenAIRequest.completion(model=A, prompt="p", temperature=0)
        for request in (seeded, greedy):
            assert [(await tg.open(request)).cache_status for _ in range(2)] == ["MISS", "HIT"]


async def test_series_exist_at_zero_once_a_model_is_servable(tmp_path: Path) -> None:
    async with lab(tmp_path, MODEL=A) as (tg, _):
        registry = tg.metrics.registry
        for name in ("text_cache_hits_total", "text_cache_misses_total",
                     "text_generation_seconds_count"):
            assert registry.get_sample_value(name, {"model": A}) == 0.0, name
        errors = registry.get_sample_value("text_generation_errors_total",
                                           {"model": A, "error_type": "generation_failed"})
        assert errors == 0.0
        assert registry.get_sample_value("text_cache_hits_total", {"model": B}) is None


async def test_draining_refuses_new_requests_and_fails_readiness(tmp_path: Path) -> None:
    from textgen import ShuttingDown

    async with lab(tmp_path, MODEL=A) as (tg, st):
        reader = asyncio.create_task(read(tg, held_stream(A)))
        await asyncio.wait_for(st.engines[0].holding.wait(), 5)
        tg.begin_drain()
        assert tg.readiness() == ["the lab is stopping"]
        with pytest.raises(ShuttingDown):
            await tg.complete(OpenAIRequest.completion(model=A, prompt="late"))
        st.engines[0].release.set()  # the one running finishes normally
        assert (await reader)[-1]["choices"][0]["finish_reason"] == "stop"


async def test_interrupting_the_lab_ends_streams_with_an_error(tmp_path: Path) -> None:
    async with lab(tmp_path, MODEL=A) as (tg, st):
        reader = asyncio.create_task(read(tg, held_stream(A)))
        await asyncio.wait_for(st.engines[0].holding.wait(), 5)
        await tg.interrupt(GenerationInterrupted("The lab is stopping; retry."))
        with pytest.raises(GenerationInterrupted):
            await asyncio.wait_for(reader, 5)

