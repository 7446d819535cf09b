"""Adapter folders read and checked before vLLM sees them; LORA_MODULES in both its forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.lora import make_adapter
from textgen import Settings
from textgen.adapters import inspect, matches
from textgen.errors import InvalidRequest, RequestRejected


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A base model's config.json: all an adapter's shapes are taken from."""
    folder = tmp_path / "SmolLM2-135M-Instruct"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, '
        '"head_dim": 16, "num_hidden_layers": 2}')
    return folder


def test_an_adapter_is_read_with_its_rank_base_and_identity(base: Path, tmp_path: Path) -> None:
    folder = inspect(make_adapter(tmp_path / "a", base, rank=4, base_name="org/SmolLM2-135M-Instruct"),
                     max_rank=8)
    assert (folder.rank, folder.base) == (4, "org/SmolLM2-135M-Instruct")
    same = inspect(tmp_path / "a", max_rank=8)
    assert same.identity == folder.identity
    make_adapter(tmp_path / "a", base, rank=4, seed=1)
    assert inspect(tmp_path / "a", max_rank=8).identity != folder.identity  # new weights


def test_bad_folders_are_refused_with_vllms_statuses(base: Path, tmp_path: Path) -> None:
    with pytest.raises(RequestRejected, match="No adapter found") as missing:
        inspect(tmp_path / "nothing", max_rank=8)
    assert missing.value.status == 404
    make_adapter(tmp_path / "big", base, rank=16)
    with pytest.raises(InvalidRequest, match="MAX_LORA_RANK"):
        inspect(tmp_path / "big", max_rank=8)
    config = make_adapter(tmp_path / "p", base) / "adapter_config.json"
    config.write_text(config.read_text().replace('"LORA"', '"IA3"'))
    with pytest.raises(InvalidRequest, match="not a LoRA adapter"):
        inspect(tmp_path / "p", max_rank=8)


def test_a_base_is_recognised_by_id_folder_or_name(base: Path) -> None:
    model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert matches(model, model, base)
    assert matches(str(base), model, base)
    assert matches("/elsewhere/SmolLM2-135M-Instruct", model, None)
    assert not matches("google/gemma-3-270m", model, base)
    assert not matches(None, model, base)


def test_lora_modules_take_vllms_form_and_json() -> None:
    assert {
        "a": Path("/x/a"), "b": Path("/x/b"), "c": Path("/x/c")} == Settings(LORA_MODULES="a=/x/a b=/x/b,c=/x/c").LORA_MODULES
    assert {"a": Path("/x/a")} == Settings(LORA_MODULES='{"a": "/x/a"}').LORA_MODULES
    with pytest.raises(ValueError, match="name=path"):
        Settings(LORA_MODULES="just-a-path")


@pytest.mark.parametrize("value", ["a=/x/a b=/x/b", '{"a": "/x/a", "b": "/x/b"}'])
def test_lora_modules_from_the_environment_in_both_forms(value: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # As `LORA_MODULES=... textgen serve` gives it: vLLM's form was refused as "not JSON".
    monkeypatch.setenv("LORA_MODULES", value)
    assert {"a": Path("/x/a"), "b": Path("/x/b")} == Settings().LORA_MODULES
