"""Engine faults that a real vLLM cannot be made to produce on demand, through the API.

FakeFailingEngine dies mid-stream; FakeGatedEngine holds requests until released, to fill the
per-engine concurrency bound. Both are fakes, named so; the real engine's own paths are tested
in test_openai_engine.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from textgen import GenerationFailed, OpenAIRequest, Settings, TextGen
from textgen.engines import EngineReply

MODEL = "fake/model"


def chunk(text: str) -> dict[str, Any]:
    return {"id": "cmpl-fake", "object": "text_completion", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": None}]}


# The first events of a Responses and a Messages stream, as vLLM sends them.
RESPONSE_EVENTS = [
    {"type": "response.created", "sequence_number": 0,
     "response": {"id": "resp_fake", "object": "response", "status": "in_progress", "output": []}},
    {"type": "response.in_progress", "sequence_number": 1,
     "response": {"id": "resp_fake", "object": "response", "status": "in_progress", "output": []}},
]
MESSAGE_EVENTS = [
    {"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant",
                                          "content": [], "model": MODEL,
                                          "usage": {"input_tokens": 3, "output_tokens": 0}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
]


class FakeFailingEngine:
    """Fails after two chunks of every stream, and every plain request; holds "gate" prompts."""

    kind = "vllm"

    def __init__(self) -> None:
        self.running = 0
        self.gate_full = asyncio.Event()  # set once two requests are held at the gate

    def cache_identity(self, model: str) -> str:
        return "fake-weights"

    async def generate(self, request: OpenAIRequest, request_id: str) -> EngineReply:
        if request.body.get("prompt") == "gate":
            self.running += 1
            if self.running == 2:
                self.gate_full.set()
            try:
                await asyncio.sleep(3600)
            finally:
                self.running -= 1
        if not request.stream:
            raise GenerationFailed("The engine failed while generating (EngineDeadError).")
        if request.endpoint == "responses":
            return EngineReply(chunks=self._events(RESPONSE_EVENTS))
        if request.endpoint == "messages":
            return EngineReply(chunks=self._events(MESSAGE_EVENTS))
        return EngineReply(chunks=self._events([chunk("Hello"), chunk(" wor")]))

    async def _events(self, events: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        for event in events:
            yield event
        raise GenerationFailed("The engine failed while generating (EngineDeadError).")

    async def tokenize(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def interrupt(self, error: Exception) -> None:
        pass

    async def close(self) -> None:
        pass


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, TextGen, FakeFailingEngine]]:
    engine = FakeFailingEngine()

    async def start(model_id: str, folder: Path) -> FakeFailingEngine:
        return engine

    settings = Settings(MODEL=MODEL, MODEL_PATHS={MODEL: tmp_path}, VLLM_ENDPOINT="",
                        METRICS_PORT=0, MAX_CONCURRENT_REQUESTS=2)
    textgen = TextGen(settings, engine_starter=start)
    app = create_app(ui=False, textgen=textgen)
    async with app.router.lifespan_context(app):
        await textgen.wait_ready()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lab") as c:
            yield c, textgen, engine


async def test_failure_mid_stream_is_an_error_event_then_done(client) -> None:
    c, textgen, _ = client
    async with c.stream("POST", "/v1/completions",
                        json={"model": MODEL, "prompt": "x", "stream": True}) as r:
        assert r.status_code == 200
        events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert [c["choices"][0]["text"] for c in chunks[:-1]] == ["Hello", " wor"]
    assert chunks[-1]["error"]["code"] == "generation_failed"
    # A failed generation is never cached.
    again = await c.post("/v1/completions", json={"model": MODEL, "prompt": "x"})
    assert again.status_code == 500 and again.json()["error"]["code"] == "generation_failed"
    assert again.headers.get("X-Cache") is None
    failures = textgen.metrics.registry.get_sample_value(
        "text_generation_errors_total", {"model": MODEL, "error_type": "generation_failed"})
    assert failures == 2  # the stream cut mid-way and the plain request: both counted


def typed_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    blocks = [block.splitlines() for block in text.strip().split("\n\n")]
    return [(lines[0].removeprefix("event: "), json.loads(lines[1].removeprefix("data: ")))
            for lines in blocks]


async def test_failure_mid_stream_of_a_message_is_anthropics_error_event(client) -> None:
    c, _, _ = client
    body = {"model": MODEL, "max_tokens": 8, "stream": True,
            "messages": [{"role": "user", "content": "x"}]}
    r = await c.post("/v1/messages", json=body)
    assert r.status_code == 200
    events = typed_events(r.text)
    assert [kind for kind, _ in events] == ["message_start", "content_block_start", "error"]
    assert events[-1][1] == {"type": "error", "error": {
        "type": "api_error", "message": "The engine failed while generating (EngineDeadError)."}}
    assert "[DONE]" not in r.text


async def test_failure_mid_stream_of_a_response_is_openais_error_event(client) -> None:
    c, _, _ = client
    r = await c.post("/v1/responses", json={"model": MODEL, "input": "x", "stream": True})
    assert r.status_code == 200
    events = typed_events(r.text)
    assert [kind for kind, _ in events] == ["response.created", "response.in_progress", "error"]
    # Flat, as the openai client's ResponseErrorEvent reads it, and numbered after the last.
    assert events[-1][1] == {"type": "error", "code": "generation_failed", "param": None,
                             "message": "The engine failed while generating (EngineDeadError).",
                             "sequence_number": 2}


@pytest.mark.parametrize(("body", "status", "type_"), [
    ({"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]},
     500, "api_error"),  # the engine fails
    ({"model": "no/such-model", "max_tokens": 8, "messages": []}, 404, "not_found_error"),
    ([1, 2], 400, "invalid_request_error"),  # not an object
])
async def test_messages_errors_are_in_anthropics_envelope(client, body: Any, status: int,
                                                          type_: str) -> None:
    c, _, _ = client
    r = await c.post("/v1/messages", json=body)
    assert r.status_code == status
    assert set(r.json()) == {"type", "error"} and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == type_ and r.json()["error"]["message"]
    # The same faults elsewhere keep OpenAI's envelope.
    other = await c.post("/v1/completions", json={"model": "no/such-model", "prompt": "x"})
    assert set(other.json()["error"]) == {"message", "type", "param", "code"}


async def test_engine_at_capacity_answers_503_at_once(client) -> None:
    c, _, engine = client
    # Cache-Control: no-cache, or the second identical request would share the first's
    # generation (single flight) instead of taking a slot of its own.
    gated = [asyncio.create_task(c.post("/v1/completions", json={"model": MODEL, "prompt": "gate"},
                                        headers={"Cache-Control": "no-cache"}))
             for _ in range(2)]
    await asyncio.wait_for(engine.gate_full.wait(), 10)  # the bound of 2 is reached
    r = await asyncio.wait_for(c.post("/v1/completions", json={"model": MODEL, "prompt": "y"}), 5)
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_overloaded"
    assert r.headers["Retry-After"] == "1"
    for task in gated:
        task.cancel()
    await asyncio.gather(*gated, return_exceptions=True)
