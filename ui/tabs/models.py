"""The Models tab: every model's status, load and unload with progress, GPU memory per model,
LoRA adapters loaded from a path or an upload; with ADMIN_TOKEN set, changes need that token."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import shutil
from pathlib import Path

import gradio as gr
import pandas as pd

from textgen import InvalidRequest, ModelInfo, TextGen, TextGenError

from .. import picker
from ..alerts import user_error

COLUMNS = ["model", "status", "kind", "size", "req/min", "backend", "loaded at", "GPU GB", "note"]
WIDTHS = ["24%", "12%", "7%", "9%", "6%", "6%", "7%", "5%", "24%"]


def status_frame(infos: list[ModelInfo]) -> pd.DataFrame:
    """One row per model, runnable ones first."""
    rows = []
    for m in picker.ordered(infos):
        loaded_at = (dt.datetime.fromtimestamp(m.loaded_at).strftime("%H:%M:%S")
                     if m.loaded_at else "")
        rows.append([
            m.id, picker.STATUS_MARK[m.status],
            "pooling" if m.runner == "pooling" else "instruct" if m.instruct else "base",
            picker.size_class(m.size_class), m.rate_limit, m.backend, loaded_at,
            "" if m.gpu_memory_usage is None else f"{m.gpu_memory_usage:.2f}", m.reason or "",
        ])
    return pd.DataFrame(rows, columns=COLUMNS)


def gpu_line(textgen: TextGen) -> str:
    probe = textgen.telemetry.gpu
    if not probe.available:
        return f"GPU: {probe.error or 'no NVIDIA GPU detected'} — models run on the CPU."
    used = probe.memory_used_gb()
    return f"GPU memory in use on all GPUs: {used:.2f} GB." if used is not None else "GPU memory: unknown."


def check_admin(textgen: TextGen, given: str | None) -> None:
    """With ADMIN_TOKEN set, loading and unloading need it (as the API's routes do)."""
    admin = textgen.settings.admin_token()
    if admin is not None and not secrets.compare_digest((given or "").strip().encode(),
                                                        admin.encode()):
        raise user_error("Loading and unloading models and adapters needs the admin token "
                         "(ADMIN_TOKEN): type it in the field above.", title="Not allowed")


def uploaded_adapter(textgen: TextGen, name: str, files: list[str]) -> Path:
    """Copy an uploaded adapter's files (adapter_config.json, the weights) into a folder of
    its own under LAB_DATA_DIR/adapters, where vLLM can load it; that folder."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
        raise user_error("An uploaded adapter's name is letters, digits, '.', '_' and '-'.")
    folder = textgen.settings.LAB_DATA_DIR.expanduser() / "adapters" / name
    if folder.exists():
        shutil.rmtree(folder)  # a new upload under the same name replaces the old files
    folder.mkdir(parents=True)
    for file in files:
        shutil.copy(file, folder / Path(file).name)
    return folder


def build(demo: gr.Blocks, textgen: TextGen, tab: gr.Tab) -> gr.Timer:
    """Lay out the tab inside the current Blocks context and wire its events."""
    limit = textgen.settings.MAX_LOADED_MODELS
    gr.Markdown(f"Load a model to generate with it. At most **{limit}** in-process model(s) stay "
                "loaded (`MAX_LOADED_MODELS`); loading another unloads the least recently used. "
                "Models whose weights are not on this machine are listed as unavailable.")
    admin = gr.Textbox(label="Admin token", type="password", elem_id="models-admin-token",
                       visible=textgen.settings.admin_token() is not None,
                       info="Loading and unloading need it on this lab (ADMIN_TOKEN).")
    with gr.Row(equal_height=True):
        chosen = gr.Dropdown(label="Model", choices=[], scale=4, elem_id="models-pick")
        load = gr.Button("Load", variant="primary", scale=1, min_width=90, elem_id="models-load")
        unload = gr.Button("Unload", scale=1, min_width=90, elem_id="models-unload")
    with gr.Accordion("LoRA adapter", open=False, elem_id="models-adapter"):
        gr.Markdown("Load a fine-tune of a loaded model as a model of its own. Its base is the "
                    "adapter's `base_model_name_or_path`, or the model picked above. Engines "
                    "need `ENABLE_LORA` to take adapters.")
        with gr.Row(equal_height=True):
            adapter_name = gr.Textbox(label="Name", scale=2, elem_id="adapter-name")
            adapter_path = gr.Textbox(label="Folder on the lab's machine", scale=4,
                                      elem_id="adapter-path")
        adapter_files = gr.File(label="…or upload adapter_config.json and the weights",
                                file_count="multiple", type="filepath",
                                elem_id="adapter-files")
        with gr.Row():
            load_adapter = gr.Button("Load adapter", variant="primary",
                                     elem_id="adapter-load")
            unload_adapter = gr.Button("Unload adapter", elem_id="adapter-unload")
    progress = gr.Markdown(elem_id="models-progress")
    table = gr.Dataframe(status_frame(textgen.list_models()), interactive=False, wrap=True,
                         column_widths=WIDTHS, max_height=640, elem_id="models-table",
                         label="Models")
    gpu = gr.Markdown(elem_id="models-gpu")

    seen = gr.State("")

    def refresh(current: str | None, signature: str = ""):
        infos = textgen.list_models()
        sig = picker.signature(infos)
        if sig == signature and current:
            return gr.skip(), gpu_line(textgen), gr.skip(), sig  # the clock ticked, nothing changed
        runnable = [(m.id, m.id) for m in picker.ordered(infos) if m.status != "unavailable"]
        value = current if current in {v for _, v in runnable} else picker.default_model(infos)
        return (status_frame(infos), gpu_line(textgen), gr.Dropdown(choices=runnable, value=value),
                sig)

    async def do_load(model_id: str | None, token: str):
        check_admin(textgen, token)
        async for line in picker.load_progress(textgen, model_id):
            yield status_frame(textgen.list_models()), line

    async def do_unload(model_id: str | None, token: str):
        check_admin(textgen, token)
        if not model_id:
            raise user_error("Pick a model first.")
        try:
            await textgen.unload(model_id)
        except TextGenError as exc:
            raise user_error(exc.message, title="Unload failed") from None
        return status_frame(textgen.list_models()), f"{model_id} is unloaded."

    async def do_load_adapter(name: str, path: str, files: list[str] | None,
                              base: str | None, token: str):
        check_admin(textgen, token)
        name = (name or "").strip()
        if not name:
            raise user_error("Name the adapter: requests ask for it by that name.")
        folder = uploaded_adapter(textgen, name, files) if files else (path or "").strip()
        if not folder:
            raise user_error("Give the adapter's folder, or upload its files.")
        try:
            try:  # its base: the one its config names, or the only model loaded
                info = await textgen.load_adapter(name, folder, replace=True)
            except InvalidRequest as exc:
                if exc.param != "base_model_name" or not base:
                    raise
                # It names none and several models are loaded: the one picked above.
                info = await textgen.load_adapter(name, folder, base, replace=True)
        except TextGenError as exc:
            raise user_error(exc.message, title="Adapter not loaded") from None
        return (status_frame(textgen.list_models()),
                f"Adapter **{name}** is loaded on {info.parent}: pick it as a model.")

    async def do_unload_adapter(name: str, token: str):
        check_admin(textgen, token)
        try:
            await textgen.unload_adapter((name or "").strip())
        except TextGenError as exc:
            raise user_error(exc.message, title="Adapter not unloaded") from None
        return status_frame(textgen.list_models()), f"Adapter {name} is unloaded."

    # Runs only while this tab is shown (the lab switches it on and off with the tabs).
    timer = gr.Timer(2.0, active=False)
    outputs = [table, gpu, chosen, seen]
    gr.on([demo.load, tab.select, timer.tick], refresh, [chosen, seen], outputs, queue=False,
          show_progress="hidden")
    load.click(do_load, [chosen, admin], [table, progress], concurrency_limit=None).then(
        refresh, chosen, outputs, queue=False)
    unload.click(do_unload, [chosen, admin], [table, progress], concurrency_limit=None).then(
        refresh, chosen, outputs, queue=False)
    load_adapter.click(do_load_adapter,
                       [adapter_name, adapter_path, adapter_files, chosen, admin],
                       [table, progress], concurrency_limit=None).then(
        refresh, chosen, outputs, queue=False)
    unload_adapter.click(do_unload_adapter, [adapter_name, admin], [table, progress],
                         concurrency_limit=None).then(refresh, chosen, outputs, queue=False)
    return timer
