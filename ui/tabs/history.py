"""The History tab: the runs made in this browser tab, reopened into the playground or
downloaded as JSONL — the researcher's lab notebook."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .. import conversation, downloads, history
from .playground import Playground

WIDTHS = ["4%", "8%", "17%", "8%", "20%", "17%", "6%", "7%", "6%", "7%"]


def build(runs: gr.State, playground: Playground, tabs: gr.Tabs) -> None:
    """Lay out the tab inside the current Blocks context and wire its events."""
    gr.Markdown("Every run of the Playground in this browser tab, newest first: when, which "
                "model and mode, its settings, the first words, tokens, latency and cache. "
                "**Select a row** to reopen it in the Playground (settings, input and reply). "
                "It lives in this tab only: download it to keep it.")
    with gr.Row():
        download = gr.DownloadButton("Download JSONL", value=None, interactive=False, size="sm",
                                     elem_id="hist-download")
        count = gr.Markdown("No runs yet.", elem_id="hist-count")
    table = gr.Dataframe(history.frame([]), interactive=False, wrap=True, max_height=600,
                         column_widths=WIDTHS, elem_id="hist-table", label="Runs")

    def show(all_runs: list[dict[str, Any]] | None):
        if not all_runs:
            return history.frame([]), gr.DownloadButton(value=None, interactive=False), "No runs yet."
        path = downloads.write("textgen-lab-history.jsonl", history.jsonl(all_runs))
        return (history.frame(all_runs), gr.DownloadButton(value=path, interactive=True),
                f"{len(all_runs)} run(s) in this tab.")

    # Queued, as the chat's export: a file's URL is right only from the queue (mounted at /ui).
    runs.change(show, runs, [table, download, count], show_progress="hidden",
                concurrency_limit=None)

    p, chat = playground, playground.chat
    outputs = [tabs, p.mode, p.model, p.last_model, p.prompt, p.output, chat.system, chat.turns,
               chat.chatbot, chat.sent_options, *p.controls.widgets()]

    def reopen(all_runs: list[dict[str, Any]] | None, selected: gr.SelectData) -> dict[Any, Any]:
        row = selected.row_value if selected.row_value else None
        run = history.find(all_runs, int(row[0])) if row else None
        if run is None:
            return {}
        opened = history.reopened(run)
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

    table.select(reopen, runs, outputs, show_progress="hidden")
