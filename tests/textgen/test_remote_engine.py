"""RemoteEngine and remote backends in the core, against fake upstreams on loopback.

The fakes stand in where a real vLLM cannot misbehave on demand (down, slow, garbage, a stream
cut short); the answers of a real vLLM server are checked in tests/api/test_remote_vllm.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.upstreams import FakeUpstream, free_port
from textgen import (
    BackendDown,
    BackendTimeout,
    BackendUnavailable,
    ChatMessage,
    GenerationRequest,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    SamplingOptions,
    Settings,
    TextGen,
)
from textgen.backends import endpoints
from textgen.engines.remote import RemoteEngine, base_url, guess_spec
from textgen.types import Delta, Usage

MODEL = "fake/tiny-7b"


def settings(*urls: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "VLLM_ENDPOINT": urls[0] if urls else "",
        "VLLM_ENDPOINTS": list(urls[1:]),
        "MODEL": "",
        "METRICS_PORT": 0,
        "REMOTE_CONNECT_TIMEOUT_SECONDS": 0.5,
        "REMOTE_READ_TIMEOUT_SECONDS": 0.5,
        "REMOTE_DISCOVERY_INTERVAL_SECONDS": 30.0,
    }
    return Settings(**{**values, **overrides})  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def textgen(*urls: str, **overrides: object) -> AsyncIterator[TextGen]:
    tg = TextGen(settings(*urls, **overrides))
    await tg.start()
    try:
        await asyncio.wait_for(tg.backends.wait_discovered(), 5)
        yield tg
    finally:
        await tg.close()


def completion(prompt: str = "The capital of France is", **options: object) -> GenerationRequest:
    return GenerationRequest(
        model=MODEL,
        prompts=(prompt,),
        options=SamplingOptions(**options),  # type: ignore[arg-type]
        read_cache=False,
        write_cache=False,
    )


def backend_errors(tg: TextGen, url: str, code: str) -> float:
    value = tg.metrics.registry.get_sample_value(
        "text_backend_errors_total", {"backend": url, "error_type": code}
    )
    return value or 0.0


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://vllm:8000/v1/completions",
        "http://vllm:8000",
        "http://vllm:8000/",
        "http://vllm:8000/v1",
        "http://vllm:8000/v1/chat/completions",
    ],
)
def test_endpoint_accepts_the_seeds_completions_url_or_a_base_url(endpoint: str) -> None:
    assert base_url(endpoint) == "http://vllm:8000"


def test_endpoint_that_is_not_a_url_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        base_url("vllm:8000")


def test_several_endpoints_from_a_json_or_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_ENDPOINT", "http://a:8000/v1/completions")
    monkeypatch.setenv("VLLM_ENDPOINTS", "http://b:8000, http://a:8000/v1")
    assert endpoints(Settings()) == ["http://a:8000", "http://b:8000"]
    monkeypatch.setenv("VLLM_ENDPOINTS", '["http://c:8000/v1/completions"]')
    assert endpoints(Settings()) == ["http://a:8000", "http://c:8000"]
    monkeypatch.setenv("VLLM_ENDPOINT", "")
    monkeypatch.setenv("VLLM_ENDPOINTS", "")
    assert endpoints(Settings()) == []


def test_the_seeds_endpoint_is_the_default() -> None:
    assert Settings().VLLM_ENDPOINT == "http://vllm:8000/v1/completions"


@pytest.mark.parametrize(
    ("model_id", "size_class", "instruct"),
    [
        ("acme/Llama-3-8B-Instruct", "13B", True),
        ("acme/falcon2-11b", "13B", False),
        ("acme/Mixtral-8x7B-v0.1", "70B", False),
        ("acme/gemma-2-2b-it", "7B", True),
        ("acme/qwen-72b-chat", "70B", True),
        ("no-size-in-this-name", "7B", False),
        ("meta-llama/Llama-2-13b-chat-hf", "13B", True),  # a catalog model keeps its entry
    ],
)
def test_unknown_models_get_a_size_class_from_their_name(
    model_id: str, size_class: str, instruct: bool
) -> None:
    spec = guess_spec(model_id)
    assert (spec.size_class, spec.instruct) == (size_class, instruct)


# --- discovery and generation -------------------------------------------------------------


async def test_discovered_models_join_the_registry_as_loaded_remote_models() -> None:
    async with (
        FakeUpstream(models=(MODEL, "meta-llama/Llama-2-13b-chat-hf")) as fake,
        textgen(fake.url + "/v1/completions") as tg,
    ):
        info = tg.model_info(MODEL)
        assert (info.status, info.backend, info.size_class, info.rate_limit) == (
            "loaded",
            "remote",
            "7B",
            100,
        )
        llama = tg.model_info("meta-llama/Llama-2-13b-chat-hf")
        assert (llama.status, llama.backend, llama.rate_limit) == ("loaded", "remote", 50)
        health = tg.health()["remote_backends"]
        assert health["status"] == "ok"
        assert health["backends"] == [
            {"url": fake.url, "status": "up", "models": list(fake.models), "error": None}
        ]


async def test_upstream_is_always_streamed_with_usage_and_the_request_mapped() -> None:
    async with FakeUpstream() as fake, textgen(fake.url) as tg:
        result = await tg.complete(
            completion(max_tokens=7, temperature=0.0, stop=("\n",), seed=3, top_k=5)
        )
        assert result.choices[0].text == "Paris is the capital"
        assert result.choices[0].finish_reason == "length"
        assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 4)
        sent = fake.bodies[-1]
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        assert (
            sent["prompt"],
            sent["max_tokens"],
            sent["temperature"],
            sent["stop"],
            sent["seed"],
            sent["top_k"],
        ) == ("The capital of France is", 7, 0.0, ["\n"], 3, 5)
        assert "min_p" not in sent  # vLLM extensions only when they differ from the default

        chat = GenerationRequest(
            model=MODEL,
            messages=(ChatMessage("user", "Hi"),),
            options=SamplingOptions(max_tokens=4, logprobs=2),
        )
        result = await tg.complete(chat)
        assert result.choices[0].text == "Paris is the capital"
        sent = fake.bodies[-1]
        assert sent["messages"] == [{"role": "user", "content": "Hi"}]
        assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)


async def test_one_pooled_connection_is_kept_alive_across_requests() -> None:
    async with FakeUpstream() as fake, textgen(fake.url) as tg:
        for i in range(20):
            await tg.complete(completion(f"prompt {i}"))
        assert len(fake.bodies) == 20
        assert fake.connections == 1  # discovery and all 20 requests on one connection


async def test_chunks_are_passed_through_as_they_arrive() -> None:
    async with FakeUpstream("drip") as fake:
        fake.drip_chunks, fake.drip_seconds = 10, 0.1
        engine = RemoteEngine(fake.url, read_timeout=2.0)
        try:
            started = time.monotonic()
            arrivals = []
            async for event in engine.generate(completion(), "r1"):
                if isinstance(event, Delta):
                    arrivals.append(time.monotonic() - started)
            assert len(arrivals) == 10
            # The first piece arrives long before the upstream has finished (~1 s).
            assert arrivals[0] < 0.3 < 0.8 < arrivals[-1]
        finally:
            await engine.close()


async def test_closing_the_stream_closes_the_upstream_response() -> None:
    async with FakeUpstream("drip") as fake, textgen(fake.url) as tg:
        generation = await tg.open(completion())
        events = generation.events()
        await anext(events)
        await events.aclose()  # the client went away
        await asyncio.wait_for(fake.disconnected.wait(), 2.0)
        assert fake.disconnects == 1
        assert tg.models.engine_for(MODEL).in_flight() == 0


async def test_the_upstreams_own_4xx_is_passed_on_as_invalid_request() -> None:
    async with FakeUpstream() as fake, textgen(fake.url) as tg:
        fake.mode = "error400"
        with pytest.raises(InvalidRequest) as caught:
            await tg.complete(completion(max_tokens=99999))
        assert (caught.value.message, caught.value.param) == (
            "fake upstream error 400",
            "max_tokens",
        )
        assert backend_errors(tg, fake.url, "invalid_request") == 0  # not the backend's fault
        assert tg.model_info(MODEL).status == "loaded"


# --- failures and recovery ----------------------------------------------------------------


async def test_start_is_not_delayed_by_the_unreachable_default_endpoint() -> None:
    tg = TextGen(Settings(MODEL="", METRICS_PORT=0, REMOTE_CONNECT_TIMEOUT_SECONDS=1.0))
    started = time.monotonic()
    await tg.start()
    try:
        assert time.monotonic() - started < 0.5
        assert tg.health()["remote_backends"]["backends"][0]["url"] == "http://vllm:8000"
        await asyncio.wait_for(tg.backends.wait_discovered(), 10)
        backend = tg.health()["remote_backends"]["backends"][0]
        assert backend["status"] == "down" and "cannot be reached" in backend["error"]
        assert tg.health()["remote_backends"]["status"] == "degraded"
    finally:
        await tg.close()


async def test_a_backend_that_goes_down_fails_fast_shows_why_and_recovers() -> None:
    port = free_port()
    fake = await FakeUpstream(port=port).start()
    async with textgen(fake.url, REMOTE_DISCOVERY_INTERVAL_SECONDS=0.2) as tg:
        assert tg.model_info(MODEL).status == "loaded"
        await fake.stop()

        started = time.monotonic()
        with pytest.raises(BackendDown, match="cannot be reached"):
            await tg.complete(completion())
        assert time.monotonic() - started < 0.5
        info = tg.model_info(MODEL)
        assert info.status == "error" and "cannot be reached" in (info.reason or "")
        assert tg.health()["remote_backends"]["status"] == "degraded"
        assert tg.health()["models"][MODEL] == "error"
        # While it is down, requests are refused without waiting on the dead host.
        with pytest.raises(BackendDown, match="unavailable"):
            await tg.complete(completion())
        assert backend_errors(tg, fake.url, "backend_down") >= 1

        fake = await FakeUpstream(port=port).start()  # the backend comes back
        try:
            for _ in range(50):
                if tg.model_info(MODEL).status == "loaded":
                    break
                await asyncio.sleep(0.1)
            assert tg.model_info(MODEL).status == "loaded"
            assert tg.health()["remote_backends"]["status"] == "ok"
            assert (await tg.complete(completion())).choices[0].text == "Paris is the capital"
        finally:
            await fake.stop()


async def test_a_slow_backend_times_out_within_the_read_timeout() -> None:
    async with FakeUpstream() as fake, textgen(fake.url) as tg:
        fake.mode = "slow"
        started = time.monotonic()
        with pytest.raises(BackendTimeout):
            await tg.complete(completion())
        assert time.monotonic() - started < 1.5  # REMOTE_READ_TIMEOUT_SECONDS is 0.5
        assert backend_errors(tg, fake.url, "backend_timeout") == 1
        assert tg.model_info(MODEL).status == "loaded"  # slow is not down


@pytest.mark.parametrize("mode", ["garbage", "bad_json", "cut", "error500"])
async def test_garbage_from_the_backend_is_a_backend_error(mode: str) -> None:
    async with FakeUpstream() as fake, textgen(fake.url) as tg:
        fake.mode = mode
        with pytest.raises(BackendUnavailable) as caught:
            await tg.complete(completion())
        assert type(caught.value) is BackendUnavailable
        assert backend_errors(tg, fake.url, "backend_unavailable") == 1


async def test_a_backend_that_stops_serving_a_model_drops_it() -> None:
    async with FakeUpstream(models=(MODEL, "acme/other-1b")) as fake, textgen(fake.url) as tg:
        assert tg.model_info("acme/other-1b").status == "loaded"
        fake.models = (MODEL,)
        await tg.backends.discover()
        assert tg.model_info("acme/other-1b").status == "unavailable"
        assert tg.model_info(MODEL).status == "loaded"


async def test_a_404_for_a_listed_model_makes_us_ask_the_backend_again_at_once() -> None:
    async with FakeUpstream(models=(MODEL, "acme/other-1b")) as fake, textgen(fake.url) as tg:
        fake.models = (MODEL,)  # restarted with one model; the next round is 30 s away
        gone = GenerationRequest(model="acme/other-1b", prompts=("x",), read_cache=False)
        with pytest.raises(ModelNotFound, match="does not exist"):
            await tg.complete(gone)
        async with asyncio.timeout(5):
            # The registry has no event to wait on: poll it.
            while tg.model_info("acme/other-1b").status != "unavailable":  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        asked = fake.connections, len(fake.bodies)
        with pytest.raises(ModelUnavailable):  # now ours, without a round trip to the backend
            await tg.complete(gone)
        assert (fake.connections, len(fake.bodies)) == asked
        assert tg.model_info(MODEL).status == "loaded"
        assert tg.health()["remote_backends"]["backends"][0]["status"] == "up"
        assert backend_errors(tg, fake.url, "model_not_found") == 1


async def test_several_backends_each_serve_their_models() -> None:
    async with (
        FakeUpstream(models=("acme/a-7b",), reply="from a") as a,
        FakeUpstream(models=("acme/b-13b",), reply="from b") as b,
        textgen(a.url, f"{b.url}/v1/completions") as tg,
    ):
        for model, text in (("acme/a-7b", "from a"), ("acme/b-13b", "from b")):
            request = GenerationRequest(model=model, prompts=("x",), read_cache=False)
            assert (await tg.complete(request)).choices[0].text == text
        assert [b["status"] for b in tg.health()["remote_backends"]["backends"]] == ["up", "up"]


async def test_the_engine_ends_with_usage() -> None:
    async with FakeUpstream() as fake:
        engine = RemoteEngine(fake.url)
        try:
            events = [e async for e in engine.generate(completion(), "r2")]
            assert isinstance(events[-1], Usage) and events[-1].completion_tokens == 4
            assert all(isinstance(e, Delta) for e in events[:-1])
        finally:
            await engine.close()


async def test_events_split_anywhere_across_chunks_are_read_whole() -> None:
    import httpx

    from textgen.engines.remote import _sse_data

    events = [b'data: {"a":1}', b'event: x\r\ndata: {"b":2}', b"data: [DONE]"]
    raw = b"".join(e + (b"\r\n\r\n" if b"\r" in e else b"\n\n") for e in events)

    class Chunks(httpx.AsyncByteStream):
        def __init__(self, size: int) -> None:
            self.size = size

        async def __aiter__(self) -> AsyncIterator[bytes]:
            for i in range(0, len(raw), self.size):
                yield raw[i : i + self.size]

    for size in range(1, len(raw) + 1):
        response = httpx.Response(200, stream=Chunks(size))
        assert [d async for d in _sse_data(response)] == [b'{"a":1}', b'{"b":2}', b"[DONE]"]
