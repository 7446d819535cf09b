"""The Models tab's checks: the admin token before a load or unload, and an uploaded adapter's
files kept in a folder of its own. The tab itself, in a browser: tests/ui/test_browser.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from textgen import Settings
from ui.tabs.models import check_admin, uploaded_adapter


def lab(tmp_path: Path, **settings: str) -> SimpleNamespace:
    # The checks read only the lab's settings.
    return SimpleNamespace(settings=Settings(LAB_DATA_DIR=tmp_path, **settings))  # type: ignore[arg-type]


def test_without_an_admin_token_anyone_may_load(tmp_path: Path) -> None:
    check_admin(lab(tmp_path), "")  # type: ignore[arg-type]


@pytest.mark.parametrize("given", ["", None, "wrong", "admin-secre"])
def test_with_one_a_wrong_or_missing_token_is_refused_without_showing_it(
        tmp_path: Path, given: str | None) -> None:
    with pytest.raises(gr.Error) as refused:
        check_admin(lab(tmp_path, ADMIN_TOKEN="admin-secret"), given)  # type: ignore[arg-type]
    assert "ADMIN_TOKEN" in refused.value.message and "admin-secret" not in refused.value.message


def test_the_admin_token_passes(tmp_path: Path) -> None:
    check_admin(lab(tmp_path, ADMIN_TOKEN="admin-secret"), " admin-secret ")  # type: ignore[arg-type]


def test_an_upload_lands_in_its_own_folder_and_a_new_one_replaces_it(tmp_path: Path) -> None:
    sent = tmp_path / "sent"
    sent.mkdir()
    (sent / "adapter_config.json").write_text("{}")
    (sent / "adapter_model.safetensors").write_bytes(b"weights")
    (sent / "old.bin").write_bytes(b"old")
    files = [str(sent / n) for n in ("adapter_config.json", "adapter_model.safetensors", "old.bin")]
    folder = uploaded_adapter(lab(tmp_path), "my-finetune", files)  # type: ignore[arg-type]
    assert folder == tmp_path / "adapters" / "my-finetune"
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "old.bin"]
    again = uploaded_adapter(lab(tmp_path), "my-finetune", files[:2])  # type: ignore[arg-type]
    assert sorted(p.name for p in again.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 200])
def test_an_upload_name_cannot_leave_the_adapters_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(gr.Error):
        uploaded_adapter(lab(tmp_path), name, [])  # type: ignore[arg-type]
