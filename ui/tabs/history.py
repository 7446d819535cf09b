"""The History tab: the lab's kept runs (textgen.runs), filtered, reopened into the playground
or downloaded as JSONL — the researcher's lab notebook, kept across reloads and restarts."""

from __future__ import annotations

from typing import Any

import gradio as gr

from textgen import TextGen, TextGenError
from textgen.runs import RunRecord, diff

from .. import conversation, downloads, history
from ..alerts import user_error
from .playground import Playground

WIDTHS = ["7%", "9%", "15%", "8%", "19%", "17%", "6%", "7%", "6%", "6%"]
ANY = "any"


def build(textgen: TextGen, finished: gr.State, playground: Playground, tabs: gr.Tabs,
          tab: gr.Tab) -> None:
    """Lay out the tab inside the current Blocks context and wire its events."""
    gr.Markdown("Every run the lab kept, newest first: the Playground's and Compare's runs from "
                "any page, sweeps, and API requests sent with `X-Lab-Record: 1`. **Select a "
                "row** to reopen it in the Playground (settings, input and reply). Runs are "
                "kept across reloads and restarts (the run store: `RUNS_DATABASE_URL`); "
                "delete one below (an evaluation with all its runs: `DELETE /lab/evaluations/{id}`).")
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
    with gr.Accordion("Re-run, compare or delete runs", open=False, elem_id="hist-tools"):
        with gr.Row(equal_height=True):
            run_a = gr.Dropdown([], label="Run A", elem_id="hist-run-a", scale=3,
                                allow_custom_value=True)
            run_b = gr.Dropdown([], label="Run B", elem_id="hist-run-b", scale=3,
                                allow_custom_value=True)
            rerun = gr.Button("Re-run A", size="sm", elem_id="hist-rerun", scale=0)
            compare = gr.Button("Diff A and B", size="sm", variant="primary",
                                elem_id="hist-diff", scale=0)
            delete = gr.Button("Delete A", size="sm", variant="stop", elem_id="hist-delete",
                               scale=0)
        compared = gr.HTML(elem_id="hist-diff-view")

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

    def pickers(runs: list[RunRecord], a: str | None, b: str | None):
        """The shown runs in the pickers; A and B stay while they are shown, else the two
        newest (so a fresh page compares the last two runs)."""
        choices = [(history.choice_label(r), r.id) for r in runs]
        ids = [r.id for r in runs]
        a = a if a in ids else (ids[1] if len(ids) > 1 else (ids[0] if ids else None))
        b = b if b in ids else (ids[0] if ids else None)
        return gr.Dropdown(choices=choices, value=a), gr.Dropdown(choices=choices, value=b)

    inputs, outputs = [model, mode, text], [table, download, count, shown]
    # Queued, as the chat's export: a file's URL is right only from the queue (mounted at /ui).
    for event in (finished.change, tab.select, refresh.click, model.change, mode.change,
                  text.submit):
        event(show, inputs, outputs, show_progress="hidden", concurrency_limit=None).then(
            pickers, [shown, run_a, run_b], [run_a, run_b], show_progress="hidden")

    async def do_rerun(a: str | None):
        if not a:
            raise user_error("Pick run A first.")
        try:
            again = await textgen.rerun(a)
            first = await textgen.runs.get(a)
        except TextGenError as exc:
            raise user_error(exc.message, title="Re-run failed") from None
        # The new run as B, compared with A at once.
        return again.id, history.diff_html(diff(first, again))

    async def do_diff(a: str | None, b: str | None):
        if not a or not b:
            raise user_error("Pick two runs, A and B.")
        try:
            return history.diff_html(diff(await textgen.runs.get(a), await textgen.runs.get(b)))
        except TextGenError as exc:
            raise user_error(exc.message, title="Diff failed") from None

    rerun_done = rerun.click(do_rerun, run_a, [run_b, compared], concurrency_limit=None)
    # Refresh the table (the new run is in it), then show it as B.
    rerun_done.then(show, inputs, outputs, show_progress="hidden").then(
        pickers, [shown, run_a, run_b], [run_a, run_b], show_progress="hidden")
    compare.click(do_diff, [run_a, run_b], compared, concurrency_limit=None)

    async def do_delete(a: str | None):
        if not a:  # nothing picked, or the page's "are you sure?" answered no
            return gr.skip(), gr.skip()
        try:
            deleted = await textgen.runs.delete([a])
        except TextGenError as exc:
            raise user_error(exc.message, title="Delete failed") from None
        if not deleted:
            raise user_error("Run A was deleted already.")
        return None, ""  # A is gone, and any diff that showed it

    # A is filled in for the user (the newest runs): the page asks before anything is deleted.
    confirm = ("(a) => a && confirm('Delete run ' + a.slice(0, 8) + ' from the store? "
               "This cannot be undone.') ? a : null")
    deleted = delete.click(do_delete, run_a, [run_a, compared], js=confirm,
                           concurrency_limit=None)
    deleted.success(show, inputs, outputs, show_progress="hidden").then(
        pickers, [shown, run_a, run_b], [run_a, run_b], show_progress="hidden")

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
