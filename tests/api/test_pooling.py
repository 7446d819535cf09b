"""vLLM's pooling routes through the lab: embeddings (OpenAI's and Cohere's), pooling, score and
rerank of the embedded SmolLM2 served as an embedding model, in-process and in front of vLLM's
own server, answered as that server answers (ids and times aside), cached by the model's weights.

The oracle is vLLM's server on the same folder with the same flags (`--runner pooling
--convert embed`, float32): the lab's in-process engine must give the same vectors and scores,
and the lab in front of the server must pass its answers through unchanged.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from api.app import create_app
from tests.support.processes import LabServer
from tests.support.upstreams import (
    VllmEmbeddingServer,
    VllmServer,
    eventually,
    lab_in_front_of,
    serve_app,
)
from textgen import DEFAULT_MODEL, EMBEDDING_MODEL, Settings, TextGen
from textgen.engines.remote import RemoteServer

TOKEN = "pooling-token"
MODEL = EMBEDDING_MODEL
TEXTS = ["The cat sat on the mat.", "A kitten rests on a rug.", "Stock markets fell sharply."]
# Answer fields that name one answer (its id, its time), not what was computed.
OWN = ("id", "created")

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def oracle() -> Iterator[VllmServer]:
    server = VllmEmbeddingServer.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def local_lab() -> AsyncIterator[tuple[httpx.AsyncClient, TextGen]]:
    """A lab of this module's own, serving the embedding model in-process as the oracle does:
    a client of its API, and its TextGen (for its metrics)."""
    settings = Settings(
        MODEL=MODEL, VLLM_ENDPOINT="", REDIS_URL="", METRICS_PORT=0,
        API_TOKEN=TOKEN, RATE_LIMITS={MODEL: 0}, DTYPE="float32",  # type: ignore[arg-type]
        VLLM_SERVE_ARGS={MODEL: "--runner pooling --convert embed --no-enable-prefix-caching"},
    )
    app = create_app(settings, ui=False)
    async with serve_app(app) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300) as client:
        await app.state.textgen.wait_ready()
        yield client, app.state.textgen


@pytest.fixture(scope="module")
def local(local_lab: tuple[httpx.AsyncClient, TextGen]) -> httpx.AsyncClient:
    return local_lab[0]


@pytest.fixture(scope="module")
async def remote(oracle: VllmServer) -> AsyncIterator[httpx.AsyncClient]:
    """A lab with no engine of its own, in front of the oracle."""
    async with lab_in_front_of(oracle.url, TOKEN, MODEL) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300) as client:
        yield client


@pytest.fixture(params=["local", "remote"])
def pooled(request: pytest.FixtureRequest) -> httpx.AsyncClient:
    """The lab serving the embedding model in-process, then the lab in front of the oracle."""
    client: httpx.AsyncClient = request.getfixturevalue(request.param)
    return client


async def ask(client: httpx.AsyncClient, path: str, body: dict[str, Any],
              **headers: str) -> httpx.Response:
    return await client.post(path, json={"model": MODEL, **body}, headers=headers)


async def oracle_answer(oracle: VllmServer, path: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=oracle.url, timeout=300) as client:
        return await ask(client, path, body)


def close(ours: Any, theirs: Any, path: str = "") -> None:
    """Equal, floats to 1e-5 relative (two float32 engines, or two runs of one, differ in the
    6th digit; a wrong vector or score is off in the first)."""
    if isinstance(theirs, float):
        assert math.isclose(ours, theirs, rel_tol=1e-5, abs_tol=1e-6), (path, ours, theirs)
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and ours.keys() == theirs.keys(), (path, ours, theirs)
        for key in theirs:
            close(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), (path, ours, theirs)
        for i, (mine, upstream) in enumerate(zip(ours, theirs, strict=True)):
            close(mine, upstream, f"{path}[{i}]")
    else:
        assert ours == theirs, (path, ours, theirs)


def without_own(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k not in OWN}


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/embeddings", {"input": TEXTS}),
    ("/v1/embeddings", {"input": TEXTS[0], "encoding_format": "base64"}),
    ("/v1/embeddings", {"input": TEXTS[:2], "dimensions": None, "truncate_prompt_tokens": 4}),
    ("/pooling", {"input": TEXTS[0]}),
    ("/score", {"text_1": TEXTS[0], "text_2": TEXTS[1:]}),
    ("/v1/score", {"text_1": TEXTS[0], "text_2": TEXTS[1]}),
    ("/rerank", {"query": TEXTS[0], "documents": TEXTS[1:]}),
    ("/v2/rerank", {"query": TEXTS[0], "documents": TEXTS[1:], "top_n": 1}),
    ("/v2/embed", {"texts": TEXTS, "embedding_types": ["float", "base64"]}),  # Cohere's
])
async def test_answers_are_vllms_own(pooled: httpx.AsyncClient, oracle: VllmServer, path: str,
                                     body: dict[str, Any]) -> None:
    ours = await ask(pooled, path, body, **{"Cache-Control": "no-cache, no-store"})
    theirs = await oracle_answer(oracle, path, body)
    assert theirs.status_code == 200, theirs.text
    assert ours.status_code == 200, ours.text
    close(without_own(ours.json()), without_own(theirs.json()))


def vectors_of(response: httpx.Response, described: httpx.Response | None = None,
               ) -> list[list[float]]:
    """vLLM's binary answer read back: the offsets in the metadata header (of `described`, for
    an answer without one) over the bytes, float32 little-endian (vLLM's defaults)."""
    items = json.loads((described or response).headers["metadata"])["data"]
    return [list(struct.unpack(f"<{(item['end'] - item['start']) // 4}f",
                               response.content[item["start"]:item["end"]])) for item in items]


@pytest.mark.parametrize("path", ["/v1/embeddings", "/pooling"])
async def test_binary_answers_are_vllms_own(pooled: httpx.AsyncClient, oracle: VllmServer,
                                            path: str) -> None:
    # encoding_format "bytes": raw vectors, described in a `metadata` header; "bytes_only":
    # the same bytes without it. A cache hit answers the same bytes under an id of its own.
    body = {"input": [f"binary {pooled.base_url}", TEXTS[1]], "encoding_format": "bytes"}
    ours = await ask(pooled, path, body)
    theirs = await oracle_answer(oracle, path, body)
    assert (ours.status_code, theirs.status_code) == (200, 200), ours.text
    assert ours.headers["content-type"] == theirs.headers["content-type"] == \
        "application/octet-stream"
    close(without_own(json.loads(ours.headers["metadata"])),
          without_own(json.loads(theirs.headers["metadata"])))
    close(vectors_of(ours), vectors_of(theirs))
    hit = await ask(pooled, path, body)
    assert (ours.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert hit.content == ours.content
    assert json.loads(hit.headers["metadata"])["id"] != json.loads(ours.headers["metadata"])["id"]

    only = {**body, "encoding_format": "bytes_only"}
    ours_only = await ask(pooled, path, only, **{"Cache-Control": "no-cache, no-store"})
    theirs_only = await oracle_answer(oracle, path, only)
    assert (ours_only.status_code, theirs_only.status_code) == (200, 200), ours_only.text
    assert "metadata" not in ours_only.headers and "metadata" not in theirs_only.headers
    close(vectors_of(ours_only, ours), vectors_of(ours))
    close(vectors_of(theirs_only, ours), vectors_of(ours))


async def test_the_openai_client_embeds_and_the_vectors_mean_something(
        pooled: httpx.AsyncClient) -> None:
    client = openai.AsyncOpenAI(base_url=f"{str(pooled.base_url).rstrip('/')}/v1", api_key=TOKEN,
                                max_retries=0)
    async with client:
        answer = await client.embeddings.create(model=MODEL, input=TEXTS)
    vectors = [d.embedding for d in sorted(answer.data, key=lambda d: d.index)]
    assert answer.model == MODEL and len(vectors) == 3 and answer.usage.prompt_tokens > 0

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
            sum(x * x for x in a) * sum(y * y for y in b))

    # The two sentences about a cat on a mat are nearer each other than either is to stocks.
    assert cosine(vectors[0], vectors[1]) > max(cosine(vectors[0], vectors[2]),
                                                cosine(vectors[1], vectors[2]))


async def test_an_embedding_is_cached_and_a_hit_returns_the_same_vectors(
        pooled: httpx.AsyncClient) -> None:
    body = {"input": [f"cached {pooled.base_url}", "a second text"]}
    first = await ask(pooled, "/v1/embeddings", body)
    again = await ask(pooled, "/v1/embeddings", body)
    assert (first.status_code, again.status_code) == (200, 200)
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
    assert again.json()["data"] == first.json()["data"]  # the very same floats
    assert again.json()["id"] != first.json()["id"]  # an answer of its own
    assert again.json()["usage"] == first.json()["usage"]
    # Another body is another answer: the whole body is in the key.
    other = await ask(pooled, "/v1/embeddings", {**body, "encoding_format": "base64"})
    assert other.headers["x-cache"] == "MISS"


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/embeddings", {}),  # no input
    ("/v1/embeddings", {"input": TEXTS[0], "encoding_format": "yaml"}),
    ("/score", {"text_1": TEXTS[0]}),
    ("/rerank", {"documents": TEXTS}),  # no query
    ("/v2/embed", {"texts": TEXTS, "images": ["x"]}),  # both texts and images
    ("/v2/embed", {"texts": TEXTS, "input_type": "search_query"}),  # no prefixes for this model
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/completions", {"prompt": "hi"}),
])
async def test_bad_requests_get_vllms_status_in_the_envelope(
        pooled: httpx.AsyncClient, oracle: VllmServer, path: str, body: dict[str, Any]) -> None:
    ours = await ask(pooled, path, body)
    theirs = await oracle_answer(oracle, path, body)
    assert ours.status_code == theirs.status_code, (ours.text, theirs.text)
    assert 400 <= ours.status_code < 500
    error = ours.json()["error"]
    assert error["message"] and error["type"]


def test_a_generator_does_not_serve_embeddings(lab: LabServer) -> None:
    # vLLM's server for a text generator registers no /v1/embeddings (404); nor does the lab
    # for one (the session's lab, on the default model).
    response = httpx.post(f"{lab.base_url}/v1/embeddings", json={"model": DEFAULT_MODEL, "input": "x"},
                          headers={"Authorization": f"Bearer {lab.token}"}, timeout=60)
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["param"] == "model" and "does not serve /v1/embeddings" in error["message"]


async def test_cohere_embed_is_cached_and_its_billed_tokens_counted(
        pooled: httpx.AsyncClient) -> None:
    body = {"texts": [f"cohere {pooled.base_url}", "a second text"], "embedding_types": ["float"]}
    first = await ask(pooled, "/v2/embed", body)
    again = await ask(pooled, "/v2/embed", body)
    assert (first.status_code, again.status_code) == (200, 200), first.text
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
    assert again.json()["embeddings"] == first.json()["embeddings"]
    assert len(first.json()["embeddings"]["float"]) == 2
    billed = first.json()["meta"]["billed_units"]["input_tokens"]
    assert billed > 0 and again.json()["meta"]["billed_units"]["input_tokens"] == billed


async def test_cohere_billed_tokens_are_the_prompt_tokens_the_lab_counts(
        local_lab: tuple[httpx.AsyncClient, TextGen]) -> None:
    # Cohere's answer has no `usage`: what it bills (meta.billed_units) is what the engine
    # read, counted once, when computed (a cache hit reads nothing).
    client, textgen = local_lab

    def counted() -> float:
        return textgen.metrics.registry.get_sample_value(
            "text_generation_prompt_tokens_total", {"model": MODEL}) or 0.0

    before = counted()
    body = {"texts": [f"billed {uuid.uuid4().hex}", "a second text"], "embedding_types": ["float"]}
    first = await ask(client, "/v2/embed", body)
    billed = first.json()["meta"]["billed_units"]["input_tokens"]
    assert first.headers["x-cache"] == "MISS" and billed > 0
    await eventually(lambda: counted() - before == billed, within=30)
    again = await ask(client, "/v2/embed", body)
    assert again.headers["x-cache"] == "HIT" and counted() - before == billed


async def test_a_vllm_server_is_known_to_serve_a_pooling_model_by_its_routes(
        oracle: VllmServer) -> None:
    # What the lab reads for a remote model whose name says nothing (the catalog knows this
    # one): the routes vLLM's server registered for it.
    server = RemoteServer(oracle.url)
    try:
        await server.read_runner()
    finally:
        await server.close()
    assert server.runner == "pooling"


async def test_the_model_card_says_it_is_a_pooling_model(local: httpx.AsyncClient) -> None:
    status = (await local.get(f"/v1/models/{MODEL}")).json()
    assert (status["status"], status["runner"]) == ("loaded", "pooling")
