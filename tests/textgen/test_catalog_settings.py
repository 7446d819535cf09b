"""The seed's models, limits and settings defaults."""

from __future__ import annotations

import pytest

from textgen import DEFAULT_MODEL, Settings
from textgen.catalog import CATALOG_BY_ID, size_class

SEED_MODELS = {
    "mistralai/Mistral-7B-v0.1": 100,
    "meta-llama/Llama-2-7b-chat-hf": 100,
    "meta-llama/Llama-2-13b-chat-hf": 50,
    "meta-llama/Llama-2-70b-chat-hf": 20,
    "tiiuae/falcon-7b": 100,
    "tiiuae/falcon-40b": 40,
    "mosaicml/mpt-7b": 100,
    "mosaicml/mpt-30b": 40,
}


def test_seed_models_and_their_limits() -> None:
    for model_id, limit in SEED_MODELS.items():
        assert CATALOG_BY_ID[model_id].default_rate_limit == limit
    assert CATALOG_BY_ID[DEFAULT_MODEL].instruct
    assert not CATALOG_BY_ID["google/gemma-3-270m"].instruct


@pytest.mark.parametrize(("params", "cls"), [(0.1, "7B"), (7.2, "7B"), (13, "13B"), (30, "30B"),
                                             (40, "40B"), (70, "70B")])
def test_size_classes(params: float, cls: str) -> None:
    assert size_class(params) == cls


def test_seed_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VLLM_ENDPOINT", "API_PORT", "METRICS_PORT", "API_TOKEN", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert (s.API_PORT, s.METRICS_PORT) == (8000, 8001)
    assert s.VLLM_ENDPOINT == "http://vllm:8000/v1/completions"
    assert s.CACHE_TTL_SECONDS == 3600
    assert s.api_tokens() == []


def test_environment_is_read_and_secrets_stay_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", "tok-1")
    monkeypatch.setenv("TEXT_GEN_API_TOKEN", "tok-2")
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2")
    monkeypatch.setenv("RATE_LIMITS", '{"tiiuae/falcon-7b": 5}')
    monkeypatch.setenv("VLLM_ENDPOINT", "")
    s = Settings()
    assert s.api_tokens() == ["tok-1", "tok-2"]
    assert s.RATE_LIMITS == {"tiiuae/falcon-7b": 5}
    assert s.VLLM_ENDPOINT == ""
    assert "hunter2" not in repr(s) and "tok-1" not in repr(s)


def test_every_setting_is_in_the_settings_reference() -> None:
    # The reference (docs/settings.md) is rendered from Settings when the site is built, by
    # this hook; tests/test_docs.py builds the site and checks the page.
    import importlib.util
    from pathlib import Path

    hook = Path(__file__).resolve().parents[2] / "docs" / "hooks" / "settings.py"
    spec = importlib.util.spec_from_file_location("docs_settings_hook", hook)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = module.settings_table()
    missing = [name for name in Settings.model_fields if f"| `{name}` |" not in table]
    assert not missing, f"the settings reference lacks {missing}"
    assert module.MARKER in (hook.parents[1] / "settings.md").read_text()


def test_the_default_model_is_served_with_a_tool_call_parser() -> None:
    from textgen.engines.vllm_options import parse_serve_args

    args = parse_serve_args(["--model", "m", *CATALOG_BY_ID[DEFAULT_MODEL].serve_args])
    assert args.enable_auto_tool_choice and args.tool_call_parser == "hermes"


def test_bad_serve_flags_are_refused_with_a_reason() -> None:
    from textgen.engines.vllm_options import parse_serve_args

    with pytest.raises(ValueError, match="serve flags"):
        parse_serve_args(["--model", "m", "--no-such-flag"])
    with pytest.raises(ValueError, match="serve flags"):  # vLLM's own cross-checks
        parse_serve_args(["--model", "m", "--enable-auto-tool-choice"])
