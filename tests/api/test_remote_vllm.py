"""Our API in front of a real vLLM OpenAI server: its answers must be the upstream's own.

Both are driven with the official `openai` client, greedy (temperature 0), so the text, the
chunks of a stream and the token counts must match what the upstream says when asked directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial

import httpx
import openai
import pytest

from api.app import create_app
from tests.support.upstreams import VllmServer, serve_app
from textgen import Settings
from textgen.engines.remote import RemoteServer

# A real vLLM server costs what an engine does (~3 GB, 30 s and more to start).
pytestmark = pytest.mark.engine

MODEL = VllmServer.model
TOKEN = "remote-test-token"
PROMPTS = ["The capital of France is", "def fibonacci(n):"]


@dataclass
class Api:
    url: str
    ours: openai.AsyncOpenAI
    upstream: openai.AsyncOpenAI
    server: VllmServer
    app: object


@pytest.fixture(scope="module")
async def api(vllm: VllmServer) -> AsyncIterator[Api]:
    settings = Settings(
        VLLM_ENDPOINT=f"{vllm.url}/v1/completions",  # the seed's form of the URL
        MODEL="", METRICS_PORT=0, API_TOKEN=TOKEN,  # type: ignore[arg-type]
        RATE_LIMITS={MODEL: 0},
    )
    app = create_app(settings, ui=False)
    async with serve_app(app) as url:
        await asyncio.wait_for(app.state.textgen.backends.wait_discovered(), 10)
        ours = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
        upstream = openai.AsyncOpenAI(base_url=f"{vllm.url}/v1", api_key="none", max_retries=0)
        yield Api(url, ours, upstream, vllm, app)
        await ours.close()
        await upstream.close()


async def test_the_remote_model_is_listed_as_loaded(api: Api) -> None:
    assert MODEL in [m.id async for m in api.ours.models.list()]
    async with httpx.AsyncClient(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        status = (await c.get(f"/v1/models/{MODEL}")).json()
        health = (await c.get("/health")).json()
    assert (status["status"], status["backend"], status["reason"]) == ("loaded", "remote", None)
    assert status["loaded_at"] is not None
    assert status["runner"] == "generate"
    # Said by the routes vLLM's server registered, not assumed (generate is also the default).
    server = RemoteServer(api.server.url)
    try:
        await server.read_runner()
    finally:
        await server.close()
    assert server.runner == "generate"
    backend = health["components"]["remote_backends"]["backends"][0]
    assert (backend["url"], backend["status"], backend["models"]) == (api.server.url, "up", [MODEL])
    assert health["status"] == "ok"


async def test_completions_are_the_upstreams_own(api: Api) -> None:
    args = {"model": MODEL, "prompt": PROMPTS, "max_tokens": 24, "temperature": 0,
            "logprobs": 2, "extra_headers": {"Cache-Control": "no-cache, no-store"}}
    ours = await api.ours.completions.create(**args)  # type: ignore[call-overload]
    theirs = await api.upstream.completions.create(**args)  # type: ignore[call-overload]
    assert [(c.index, c.text, c.finish_reason) for c in ours.choices] == \
        [(c.index, c.text, c.finish_reason) for c in theirs.choices]
    assert all(c.text for c in ours.choices)
    for mine, upstream in zip(ours.choices, theirs.choices, strict=True):
        assert mine.logprobs.tokens == upstream.logprobs.tokens
        # Two runs of the same request on the same server differ in the 6th digit (float32
        # kernels); a logprob we mangled or took from another token would be far off.
        assert mine.logprobs.token_logprobs == pytest.approx(upstream.logprobs.token_logprobs,
                                                             abs=1e-4)
    assert ours.usage == theirs.usage


async def test_a_stream_is_passed_through_chunk_by_chunk(api: Api) -> None:
    args = {"model": MODEL, "prompt": PROMPTS[0], "max_tokens": 24, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True},
            "extra_headers": {"Cache-Control": "no-cache, no-store"}}

    async def pieces(client: openai.AsyncOpenAI) -> tuple[list[str], object]:
        texts, usage = [], None
        async for chunk in await client.completions.create(**args):  # type: ignore[call-overload]
            texts.extend(c.text for c in chunk.choices if c.text)
            usage = chunk.usage or usage
        return texts, usage

    ours, ours_usage = await pieces(api.ours)
    theirs, their_usage = await pieces(api.upstream)
    assert len(ours) > 5 and ours == theirs  # the same pieces, not one blob
    assert ours_usage == their_usage and their_usage is not None


async def test_chat_is_the_upstreams_own(api: Api) -> None:
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Name a primary colour."}]
    args = {"model": MODEL, "messages": messages, "max_tokens": 20, "temperature": 0,
            "extra_headers": {"Cache-Control": "no-cache, no-store"}}
    ours = await api.ours.chat.completions.create(**args)  # type: ignore[call-overload]
    theirs = await api.upstream.chat.completions.create(**args)  # type: ignore[call-overload]
    assert ours.choices[0].message.content == theirs.choices[0].message.content
    assert ours.choices[0].message.content
    assert ours.usage == theirs.usage

    text = ""
    async for chunk in await api.ours.chat.completions.create(**args, stream=True):  # type: ignore[call-overload]
        text += "".join(c.delta.content or "" for c in chunk.choices)
    assert text == theirs.choices[0].message.content


async def test_a_second_identical_request_is_a_cache_hit(api: Api) -> None:
    body = {"model": MODEL, "prompt": "Twinkle twinkle", "max_tokens": 8, "temperature": 0}
    async with httpx.AsyncClient(base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        first = await c.post("/v1/completions", json=body)
        second = await c.post("/v1/completions", json=body)
    assert first.headers["x-cache"] in ("MISS", "BYPASS") and second.headers["x-cache"] == "HIT"
    assert first.json()["choices"] == second.json()["choices"]


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"]}}}]


async def test_structured_output_and_tools_pass_through(api: Api) -> None:
    """Fields the lab never reads reach the upstream as sent: the answers are the upstream's."""
    messages = [{"role": "user", "content": "What is the weather in Paris? Reply in JSON."}]
    for extra in ({"response_format": {"type": "json_object"}},
                  {"tools": TOOLS, "tool_choice": {"type": "function",
                                                   "function": {"name": "get_weather"}}}):
        args = {"model": MODEL, "messages": messages, "max_tokens": 60, "temperature": 0,
                "extra_headers": {"Cache-Control": "no-cache, no-store"}, **extra}
        ours = await api.ours.chat.completions.create(**args)  # type: ignore[call-overload]
        theirs = await api.upstream.chat.completions.create(**args)  # type: ignore[call-overload]
        mine, upstream = ours.choices[0].message, theirs.choices[0].message
        assert mine.content == upstream.content
        assert [(c.function.name, c.function.arguments) for c in mine.tool_calls or ()] == \
            [(c.function.name, c.function.arguments) for c in upstream.tool_calls or ()]
    assert mine.tool_calls and mine.tool_calls[0].function.name == "get_weather"


async def test_requests_differing_only_in_format_or_tools_do_not_share_an_entry(api: Api) -> None:
    base = {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Rome?"}],
            "max_tokens": 30, "temperature": 0}
    variants = [base, {**base, "response_format": {"type": "json_object"}},
                {**base, "tools": TOOLS},
                {**base, "tools": TOOLS, "tool_choice": "required"}]
    async with httpx.AsyncClient(base_url=api.url, timeout=120,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        first = [(await c.post("/v1/chat/completions", json=v)).headers["x-cache"] for v in variants]
        again = [(await c.post("/v1/chat/completions", json=v)).headers["x-cache"] for v in variants]
    assert first == ["MISS"] * 4 and again == ["HIT"] * 4


async def test_the_upstreams_validation_error_is_a_400_in_our_envelope(api: Api) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await api.ours.completions.create(model=MODEL, prompt="x", max_tokens=5000)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error" and error["param"] == "max_tokens"
    assert "max_model_len" in error["message"]


async def test_a_client_that_leaves_aborts_the_upstream_generation(api: Api) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 1500, "temperature": 0,
            "ignore_eos": True, "stream": True}
    headers = {"Authorization": f"Bearer {TOKEN}", "Cache-Control": "no-cache, no-store"}
    finished = 'finished_reason="length"'
    # Counters, not vLLM's running-requests gauge: the gauge is only written at engine steps,
    # so an idle engine can go on showing the last step's count.
    generated = partial(api.server.metric, "vllm:generation_tokens_total")
    finished_before = await asyncio.to_thread(api.server.metric, "vllm:request_success_total", finished)
    before = await asyncio.to_thread(generated)
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as c, \
            c.stream("POST", "/v1/completions", json=body) as response:
        seen = 0
        async for line in response.aiter_lines():
            seen += line.startswith("data: {")
            if seen == 3:
                break
        assert await eventually(lambda: generated() > before)  # vLLM is generating for us
    # We hung up after 3 of 1500 tokens (a minute of work and more): vLLM must abort the
    # request at once. Its metrics are written at engine steps (an idle engine takes none),
    # and vLLM 0.32 does not count a client's abort under finished_reason="abort": one token
    # of another request, sent to it directly, makes a step after which nothing runs, the
    # stream's tokens stopped far short of 1500, and only that request ran to its length.
    await api.upstream.completions.create(model=MODEL, prompt="x", max_tokens=1)
    running = await asyncio.to_thread(api.server.metric, "vllm:num_requests_running")
    assert running == 0
    assert await asyncio.to_thread(generated) - before < 500
    finished_after = await asyncio.to_thread(api.server.metric, "vllm:request_success_total", finished)
    assert finished_after == finished_before + 1  # the one-token request, not the stream


async def eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll a blocking check (in a thread) until it holds or the time is up."""
    deadline = time.monotonic() + seconds
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True
