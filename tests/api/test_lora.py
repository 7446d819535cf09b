"""LoRA adapters as models, in-process: loaded at run time through vLLM's routes, served by
the base model's engine, listed as vLLM lists them, cached by their own weights, refused
clearly when bad. The adapters are made here (tests/support/lora.py): random LoRA weights in
PEFT's format for the embedded model."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from tests.support.lora import make_adapter
from tests.support.upstreams import serve_app
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
