"""The History tab: the lab's kept runs (textgen.runs), filtered, reopened into the playground
or downloaded as JSONL — the researcher's lab notebook, kept across reloads and restarts."""

from __future__ import annotations

from typing import Any

import gradio as gr

from textgen import TextGen, TextGenError
from textgen.runs import RunRecord

from .. import conversation, downloads, history
from .playground import Playground

WIDTHS = ["7%", "9%", "15%", "8%", "19%", "17%", "6%", "7%", "6%", "6%"]
ANY = "any"


def build(textgen: TextGen, finished: gr.State, playground: Playground, tabs: gr.Tabs,
          tab: gr.Tab) -> None:
    """Lay out the tab inside the current Blocks context and wire its events."""
    gr.Markdown("Every run the lab kept, newest first: the Playground's and Compare's runs from "
                "any page, sweeps, and API requests sent with `X-Lab-Record: 1`. **Select a "
                "row** to reopen it in the Playground (settings, input and reply). Runs are "
                "kept across reloads and restarts (the run store: `RUNS_DATABASE_URL`).")
    with gr.Row():
        model = gr.Dropdown([ANY, *(m.id for m in textgen.list_models())], value=ANY,
                            label="Model", allow_custom_value=True, elem_id="hist-model", scale=2)
        mode = gr.Dropdown([ANY, *history.MODES], value=ANY, label="Mode", elem_id="hist-mode",
                           scale=1)
        text = gr.Textbox(label="Text in the request or the reply", elem_id="hist-text",
                          scale=2)
        refresh = gr.Button("Refresh", size="sm", elem_id="hist-refresh", scale=0)
    with gr.Row():
        download = gr.DownloadButton("Download JSONL", value=None, interactive=False, size="sm",
                                     elem_id="hist-download")
        count = gr.Markdown("No runs yet.", elem_id="hist-count")
    table = gr.Dataframe(history.frame([]), interactive=False, wrap=True, max_height=600,
                         column_widths=WIDTHS, elem_id="hist-table", label="Runs")
    shown = gr.State([])  # the rows' runs, for reopening one

    async def show(model_: str | None, mode_: str | None, text_: str | None):
        try:
            runs = await textgen.runs.runs(model=_chosen(model_), mode=_chosen(mode_),
                                           text=(text_ or "").strip() or None,
                                           limit=history.SHOWN)
        except TextGenError as exc:
            return (history.frame([]), gr.DownloadButton(value=None, interactive=False),
                    f"⚠ {exc.message}", [])
        if not runs:
            return (history.frame([]), gr.DownloadButton(value=None, interactive=False),
                    "No runs yet." if not (_chosen(model_) or _chosen(mode_) or text_)
                    else "No run matches.", [])
        path = downloads.write("textgen-lab-history.jsonl", history.jsonl(runs))
        more = " (the newest; filter to find older ones)" if len(runs) == history.SHOWN else ""
        return (history.frame(runs), gr.DownloadButton(value=path, interactive=True),
                f"{len(runs)} run(s){more}.", runs)

    inputs, outputs = [model, mode, text], [table, download, count, shown]
    # Queued, as the chat's export: a file's URL is right only from the queue (mounted at /ui).
    for event in (finished.change, tab.select, refresh.click, model.change, mode.change,
                  text.submit):
        event(show, inputs, outputs, show_progress="hidden", concurrency_limit=None)

    p, chat = playground, playground.chat
    reopen_outputs = [tabs, p.mode, p.model, p.last_model, p.prompt, p.output, chat.system,
                      chat.turns, chat.chatbot, chat.sent_options, *p.controls.widgets()]

    def reopen(runs: list[RunRecord], selected: gr.SelectData) -> dict[Any, Any]:
        row = selected.index[0] if isinstance(selected.index, list | tuple) else None
        if row is None or not 0 <= row < len(runs):
            return {}
        opened = history.reopened(runs[row])
        out: dict[Any, Any] = {tabs: gr.Tabs(selected="playground"), p.mode: opened["mode"],
                               p.model: opened["model"], p.last_model: opened["model"],
                               **p.controls.updates(opened["settings"])}
        if "turns" in opened:
            out.update({chat.system: opened["system"], chat.turns: opened["turns"],
                        chat.chatbot: conversation.display(opened["turns"]),
                        chat.sent_options: opened["settings"]})
        else:
            out.update({p.prompt: opened["prompt"], p.output: opened["output"]})
        return out

    table.select(reopen, shown, reopen_outputs, show_progress="hidden")


def _chosen(value: str | None) -> str | None:
    return None if not value or value == ANY else value
