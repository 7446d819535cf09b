"""LoRA adapters as models, in-process: loaded at run time through vLLM's routes, served by
the base model's engine, listed as vLLM lists them, cached by their own weights, refused
clearly when bad. The adapters are made here (tests/support/lora.py): random LoRA weights in
PEFT's format for the embedded model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from tests.support.lora import make_adapter
from tests.support.upstreams import VllmServer, lab_in_front_of, serve_app
from textgen import DEFAULT_MODEL, Settings

TOKEN = "lora-token"
ADMIN = "lora-admin"  # ADMIN_TOKEN: the module's client sends it, so it may load and unload
PROMPT = {"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0}

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
async def api() -> AsyncIterator[httpx.AsyncClient]:
    """A lab of this module's own: its engine starts with LoRA enabled (rank up to 8)."""
    settings = Settings(
        MODEL=DEFAULT_MODEL, VLLM_ENDPOINT="", REDIS_URL="", METRICS_PORT=0,
        API_TOKEN=TOKEN, ADMIN_TOKEN=ADMIN,  # type: ignore[arg-type]
        ENABLE_LORA=True, MAX_LORA_RANK=8, RATE_LIMITS={DEFAULT_MODEL: 0},
        UNLOAD_DRAIN_SECONDS=1.0,  # an unload ends what still runs after a second
        # As the oracle below runs: float32, no prefix cache (tests/support/upstreams.py).
        DTYPE="float32",
        VLLM_SERVE_ARGS={DEFAULT_MODEL: "--enable-auto-tool-choice --tool-call-parser hermes "
                                        "--no-enable-prefix-caching"},
    )
    app = create_app(settings, ui=False)
    async with serve_app(app) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=300) as client:
        await app.state.textgen.wait_ready()
        yield client


@pytest.fixture(scope="module")
def base_folder() -> Path:
    from textgen import embedded

    folder = embedded.prepared_folder(DEFAULT_MODEL, Settings().MODEL_CACHE_DIR)
    assert folder is not None, "make model prepares the embedded model"
    return folder


async def complete(api: httpx.AsyncClient, model: str) -> tuple[str, str]:
    response = await api.post("/v1/completions", json={"model": model, **PROMPT})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"], response.headers["x-cache"]


async def test_an_adapter_loads_lists_generates_and_unloads(
        api: httpx.AsyncClient, base_folder: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "pirate", base_folder, base_name=DEFAULT_MODEL)
    body = {"lora_name": "pirate", "lora_path": str(adapter)}
    api_token = {"Authorization": f"Bearer {TOKEN}"}
    refused = await api.post("/v1/load_lora_adapter", json=body, headers=api_token)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_token_required"
    assert "pirate" not in {m["id"] for m in (await api.get("/v1/models", headers=api_token)).json()["data"]}
    loaded = await api.post("/v1/load_lora_adapter", json=body)
    assert loaded.status_code == 200, loaded.text
    assert loaded.text == "Success: LoRA adapter 'pirate' added successfully."

    cards = {m["id"]: m for m in (await api.get("/v1/models")).json()["data"]}
    assert (cards["pirate"]["parent"], cards["pirate"]["root"]) == (DEFAULT_MODEL, str(adapter))
    status = (await api.get("/v1/models/pirate")).json()
    assert (status["status"], status["parent"], status["backend"]) == ("loaded", DEFAULT_MODEL, "lora")

    base_text, _ = await complete(api, DEFAULT_MODEL)
    adapted, cache = await complete(api, "pirate")
    assert cache == "MISS"
    assert adapted != base_text, "the adapter's weights changed nothing"
    assert await complete(api, "pirate") == (adapted, "HIT")

    # As vLLM's server: a name already loaded is refused unless the load is asked in place.
    twice = await api.post("/v1/load_lora_adapter",
                           json={"lora_name": "pirate", "lora_path": str(adapter)})
    assert twice.status_code == 400 and "load_inplace" in twice.json()["error"]["message"]

    # New weights under the same name and path: the cache must not answer with the old ones.
    make_adapter(adapter, base_folder, seed=1, base_name=DEFAULT_MODEL)
    reloaded = await api.post("/v1/load_lora_adapter", json={
        "lora_name": "pirate", "lora_path": str(adapter), "load_inplace": True})
    assert reloaded.status_code == 200, reloaded.text
    again, cache = await complete(api, "pirate")
    assert cache == "MISS"
    assert again != adapted, "the reloaded adapter still answers with its old weights"

    kept = await api.post("/v1/unload_lora_adapter", json={"lora_name": "pirate"},
                          headers=api_token)
    assert kept.status_code == 403
    assert (await complete(api, "pirate"))[0] == again  # an API token unloaded nothing
    gone = await api.post("/v1/unload_lora_adapter", json={"lora_name": "pirate"})
    assert gone.status_code == 200 and "removed" in gone.text
    refused = await api.post("/v1/completions", json={"model": "pirate", **PROMPT})
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "model"
    again_gone = await api.post("/v1/unload_lora_adapter", json={"lora_name": "pirate"})
    assert again_gone.status_code == 404, again_gone.text
    assert "pirate" not in {m["id"] for m in (await api.get("/v1/models")).json()["data"]}


@pytest.mark.parametrize(("case", "status", "words"), [
    ("no folder", 404, "No adapter found"),
    ("no weights", 404, "No adapter found"),
    ("not a LoRA", 400, "not a LoRA adapter"),
    ("rank past the limit", 400, "MAX_LORA_RANK"),
    ("another base", 400, "not loaded here"),
    ("a model's name", 400, "conflicts"),
])
async def test_a_bad_adapter_is_a_clear_error_and_the_base_keeps_answering(
        api: httpx.AsyncClient, base_folder: Path, tmp_path: Path,
        case: str, status: int, words: str) -> None:
    folder, name = tmp_path / "adapter", "bad"
    if case == "no weights":
        make_adapter(folder, base_folder, base_name=DEFAULT_MODEL)
        (folder / "adapter_model.safetensors").unlink()
    elif case == "not a LoRA":
        make_adapter(folder, base_folder, base_name=DEFAULT_MODEL)
        config = folder / "adapter_config.json"
        config.write_text(config.read_text().replace('"LORA"', '"PREFIX_TUNING"'))
    elif case == "rank past the limit":
        make_adapter(folder, base_folder, rank=16, base_name=DEFAULT_MODEL)
    elif case == "another base":
        make_adapter(folder, base_folder, base_name="google/gemma-3-270m")
    elif case == "a model's name":
        make_adapter(folder, base_folder, base_name=DEFAULT_MODEL)
        name = DEFAULT_MODEL
    response = await api.post("/v1/load_lora_adapter",
                              json={"lora_name": name, "lora_path": str(folder)})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"] and error["param"] in ("lora_path", "lora_name")
    text, _ = await complete(api, DEFAULT_MODEL)
    assert text


async def stream_events(api: httpx.AsyncClient, model: str, max_tokens: int,
                        started: asyncio.Event | None = None) -> list[dict]:
    """A streamed completion's events, up to its end or its error event."""
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True}
    events = []
    async with api.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
                if started is not None:
                    started.set()
    return events


async def test_unloading_an_adapter_drains_it_then_ends_its_requests_and_the_base_goes_on(
        api: httpx.AsyncClient, base_folder: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "busy", base_folder, base_name=DEFAULT_MODEL)
    loaded = await api.post("/v1/load_lora_adapter",
                            json={"lora_name": "busy", "lora_path": str(adapter)})
    assert loaded.status_code == 200, loaded.text
    adapter_started, base_started = asyncio.Event(), asyncio.Event()
    # Longer than the drain: the adapter's stream is still running when the unload ends it.
    adapter_stream = asyncio.create_task(stream_events(api, "busy", 1500, adapter_started))
    base_stream = asyncio.create_task(stream_events(api, DEFAULT_MODEL, 400, base_started))
    await asyncio.wait_for(asyncio.gather(adapter_started.wait(), base_started.wait()), 120)

    gone = await api.post("/v1/unload_lora_adapter", json={"lora_name": "busy"})
    assert gone.status_code == 200, gone.text

    events = await asyncio.wait_for(adapter_stream, 60)
    assert "error" in events[-1], "the adapter's stream ran on after its unload"
    error = events[-1]["error"]
    assert error["code"] == "generation_interrupted" and "'busy' was unloaded" in error["message"]
    base = await asyncio.wait_for(base_stream, 300)
    assert "error" not in base[-1]
    assert sum(len(e["choices"][0]["text"]) for e in base if e.get("choices")) > 0
    assert base[-1]["choices"] == [] or base[-1]["choices"][0]["finish_reason"] == "length"


# --- vLLM's own server with LoRA: the oracle, and a remote backend for a lab in front ---------

@pytest.fixture(scope="module")
def adapters(base_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("adapters")
    return {name: make_adapter(folder / name, base_folder, seed=seed, base_name=DEFAULT_MODEL)
            for seed, name in enumerate(("sailor", "poet"))}


@pytest.fixture(scope="module")
def lora_vllm(adapters: dict[str, Path]) -> Iterator[VllmServer]:
    """`--enable-lora --lora-modules sailor=...`, and runtime loading allowed (poet)."""
    server = VllmServer.start(
        args=("--enable-lora", "--max-lora-rank", "8",
              "--lora-modules", f"sailor={adapters['sailor']}"),
        env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"})
    yield server
    server.stop()


async def oracle_text(server: VllmServer, model: str) -> str:
    async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
        response = await client.post("/v1/completions", json={"model": model, **PROMPT})
        assert response.status_code == 200, response.text
        return str(response.json()["choices"][0]["text"])


async def test_an_adapter_in_process_answers_as_vllms_own_server_with_it(
        api: httpx.AsyncClient, adapters: dict[str, Path], lora_vllm: VllmServer) -> None:
    loaded = await api.post("/v1/load_lora_adapter",
                            json={"lora_name": "sailor", "lora_path": str(adapters["sailor"])})
    assert loaded.status_code == 200, loaded.text
    try:
        ours, _ = await complete(api, "sailor")
        assert ours == await oracle_text(lora_vllm, "sailor")
        assert ours != (await complete(api, DEFAULT_MODEL))[0]
    finally:
        await api.post("/v1/unload_lora_adapter", json={"lora_name": "sailor"})


@pytest.fixture(scope="module")
async def remote_lab(lora_vllm: VllmServer) -> AsyncIterator[httpx.AsyncClient]:
    """A lab with no engine of its own, in front of the LoRA server."""
    async with lab_in_front_of(lora_vllm.url, TOKEN, DEFAULT_MODEL) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300) as client:
        yield client


async def test_a_remote_servers_adapters_are_models_of_the_lab(
        remote_lab: httpx.AsyncClient, adapters: dict[str, Path], lora_vllm: VllmServer) -> None:
    cards = {m["id"]: m for m in (await remote_lab.get("/v1/models")).json()["data"]}
    assert (cards["sailor"]["parent"], cards["sailor"]["root"]) == (
        DEFAULT_MODEL, str(adapters["sailor"]))
    status = (await remote_lab.get("/v1/models/sailor")).json()
    base = (await remote_lab.get(f"/v1/models/{DEFAULT_MODEL}")).json()
    assert (status["backend"], status["parent"]) == ("remote", DEFAULT_MODEL)
    assert status["size_class"] == base["size_class"]  # its limit follows its base's size
    text, cache = await complete(remote_lab, "sailor")
    assert cache == "MISS" and text == await oracle_text(lora_vllm, "sailor")


async def test_an_adapter_loads_and_unloads_on_a_remote_model_through_the_lab(
        remote_lab: httpx.AsyncClient, adapters: dict[str, Path], lora_vllm: VllmServer) -> None:
    body = {"lora_name": "poet", "lora_path": str(adapters["poet"]),
            "base_model_name": DEFAULT_MODEL}
    loaded = await remote_lab.post("/v1/load_lora_adapter", json=body)
    assert loaded.status_code == 200, loaded.text
    cards = {m["id"]: m for m in (await remote_lab.get("/v1/models")).json()["data"]}
    assert cards["poet"]["parent"] == DEFAULT_MODEL
    text, _ = await complete(remote_lab, "poet")
    assert text == await oracle_text(lora_vllm, "poet")

    # A path with no adapter: what vLLM's server answers, passed on.
    missing = {"lora_name": "nothing", "lora_path": str(adapters["poet"].parent / "missing")}
    async with httpx.AsyncClient(base_url=lora_vllm.url, timeout=60) as oracle:
        expected = (await oracle.post("/v1/load_lora_adapter", json=missing)).status_code
    refused = await remote_lab.post("/v1/load_lora_adapter",
                                    json={**missing, "base_model_name": DEFAULT_MODEL})
    assert expected >= 400 and refused.status_code == expected, refused.text
    assert set(refused.json()["error"]) == {"message", "type", "param", "code"}

    gone = await remote_lab.post("/v1/unload_lora_adapter", json={"lora_name": "poet"})
    assert gone.status_code == 200, gone.text
    assert "poet" not in {m["id"] for m in (await remote_lab.get("/v1/models")).json()["data"]}
    async with httpx.AsyncClient(base_url=lora_vllm.url, timeout=60) as oracle:
        listed = {m["id"] for m in (await oracle.get("/v1/models")).json()["data"]}
    assert "poet" not in listed and "sailor" in listed
