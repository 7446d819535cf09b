"""Cohere's /v2/embed answer carries no `usage`; what it bills (meta.billed_units) counts as the
request's prompt tokens, in the metrics as in the kept runs.

FakeCohereEngine answers as vLLM's embedding serving object does for Cohere's body; the real
engine's answer is compared with vLLM's server in tests/api/test_pooling.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textgen import OpenAIRequest, Settings, TextGen
from textgen.answer import token_counts, usage_of
from textgen.engines import EngineReply

MODEL = "fake/embedder"


class FakeCohereEngine:
    kind = "vllm"

    def __init__(self) -> None:
        self.calls = 0

    def cache_identity(self, model: str) -> str:
        return "fake-weights"

    async def generate(self, request: OpenAIRequest, request_id: str) -> EngineReply:
        self.calls += 1
        return EngineReply(response={
            "id": f"embd-{request_id}", "embeddings": {"float": [[0.25, 0.5]]},
            "texts": request.body["texts"], "response_type": "embeddings_by_type",
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 7}}})

    async def tokenize(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def interrupt(self, error: Exception) -> None:
        pass

    async def close(self) -> None:
        pass


def test_billed_text_and_image_tokens_are_prompt_tokens() -> None:
    assert token_counts(usage_of({"meta": {"billed_units": {"input_tokens": 7}}})) == (7, 0)
    # vLLM bills a request with any image all as image tokens.
    billed = {"input_tokens": 0, "image_tokens": 5}
    assert token_counts(usage_of({"meta": {"billed_units": billed}})) == (5, 0)
    assert usage_of({"meta": {}}) is None and usage_of({"meta": "x"}) is None


async def test_a_cohere_embed_counts_its_billed_tokens_once_computed(tmp_path: Path) -> None:
    engine = FakeCohereEngine()

    async def start(model_id: str, folder: Path) -> FakeCohereEngine:
        return engine

    settings = Settings(MODEL=MODEL, MODEL_PATHS={MODEL: tmp_path}, VLLM_ENDPOINT="",
                        REDIS_URL="", METRICS_PORT=0)
    textgen = TextGen(settings, engine_starter=start)
    await textgen.start()
    try:
        await textgen.wait_ready()
        body = {"model": MODEL, "texts": ["a cat on a mat"]}
        first = await textgen.complete(OpenAIRequest("cohere_embed", body))
        again = await textgen.complete(OpenAIRequest("cohere_embed", body))
        assert engine.calls == 1 and again["embeddings"] == first["embeddings"]  # a cache hit
        counted = textgen.metrics.registry.get_sample_value(
            "text_generation_prompt_tokens_total", {"model": MODEL})
        assert counted == 7  # the engine's work: the hit computed nothing
    finally:
        await textgen.close()
