"""The Models tab: every model's status, load and unload with progress, GPU memory per model."""

from __future__ import annotations

import datetime as dt

import gradio as gr
import pandas as pd

from textgen import ModelInfo, TextGen, TextGenError

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
            m.id, picker.STATUS_MARK[m.status], "instruct" if m.instruct else "base",
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


def build(demo: gr.Blocks, textgen: TextGen, tab: gr.Tab) -> gr.Timer:
    """Lay out the tab inside the current Blocks context and wire its events."""
    limit = textgen.settings.MAX_LOADED_MODELS
    gr.Markdown(f"Load a model to generate with it. At most **{limit}** in-process model(s) stay "
                "loaded (`MAX_LOADED_MODELS`); loading another unloads the least recently used. "
                "Models whose weights are not on this machine are listed as unavailable.")
    with gr.Row(equal_height=True):
        chosen = gr.Dropdown(label="Model", choices=[], scale=4, elem_id="models-pick")
        load = gr.Button("Load", variant="primary", scale=1, min_width=90, elem_id="models-load")
        unload = gr.Button("Unload", scale=1, min_width=90, elem_id="models-unload")
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

    async def do_load(model_id: str | None):
        async for line in picker.load_progress(textgen, model_id):
            yield status_frame(textgen.list_models()), line

    async def do_unload(model_id: str | None):
        if not model_id:
            raise user_error("Pick a model first.")
        try:
            await textgen.unload(model_id)
        except TextGenError as exc:
            raise user_error(exc.message, title="Unload failed") from None
        return status_frame(textgen.list_models()), f"{model_id} is unloaded."

    # Runs only while this tab is shown (the lab switches it on and off with the tabs).
    timer = gr.Timer(2.0, active=False)
    outputs = [table, gpu, chosen, seen]
    gr.on([demo.load, tab.select, timer.tick], refresh, [chosen, seen], outputs, queue=False,
          show_progress="hidden")
    load.click(do_load, chosen, [table, progress], concurrency_limit=None).then(
        refresh, chosen, outputs, queue=False)
    unload.click(do_unload, chosen, [table, progress], concurrency_limit=None).then(
        refresh, chosen, outputs, queue=False)
    return timer
