"""The Evaluate tab: a dataset over models × temperatures (× a system prompt) with a scorer, run
in the background by the core (textgen.experiments), its progress, summary, plot and answers."""

from __future__ import annotations

import asyncio
from typing import Any

import gradio as gr
import pandas as pd

from textgen import TextGen, TextGenError
from textgen.experiments import EvaluationSpec, Results, datasets, grid
from textgen.experiments.scorers import NAMES

from .. import downloads, picker
from ..alerts import user_error

SAMPLE = "".join(
    f'{{"question": "What is the capital of {country}?", "reference": "{city}"}}\n'
    for country, city in (("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"),
                          ("Japan", "Tokyo"), ("Germany", "Berlin"), ("Egypt", "Cairo")))
SCORERS = [n for n in NAMES if n != "json_schema"]  # a schema is for the API and notebooks


def build(textgen: TextGen, tab: gr.Tab) -> None:
    """Lay out the tab inside the current Blocks context and wire its events."""
    gr.Markdown("Ask every configuration (model × temperature, with an optional system prompt) "
                "every item of a dataset, score the answers, and compare. It runs in the "
                "background: leave the page and the evaluation goes on (its answers are kept "
                "runs; the API serves it at `/lab/evaluations`).")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            dataset = gr.Textbox(SAMPLE, label="Dataset (JSON Lines: prompt or question, and "
                                 "reference; or choices and answer)", lines=7, max_lines=14,
                                 elem_id="eval-dataset")
            upload = gr.File(label="…or a .jsonl / .csv file", file_types=[".jsonl", ".csv"],
                             type="filepath", height=90, elem_id="eval-upload")
            with gr.Row():
                task = gr.Textbox(label="…or an lm-evaluation-harness task", scale=2,
                                  placeholder="e.g. arc_easy", elem_id="eval-task",
                                  info="Run and scored by lm-eval itself, through the lab.")
                task_folder = gr.Textbox(label="Its task folder (optional)", scale=2,
                                         placeholder="a folder of task YAML files",
                                         elem_id="eval-task-folder")
        with gr.Column(scale=2):
            infos = textgen.list_models()
            models = gr.Dropdown(picker.choices(infos), value=[picker.default_model(infos)],
                                 multiselect=True, label="Models", elem_id="eval-models")
            temperatures = gr.Textbox("0", label="Temperatures (comma-separated)",
                                      elem_id="eval-temperatures")
            system = gr.Textbox(label="System prompt (optional)", elem_id="eval-system")
            with gr.Row():
                scorer = gr.Dropdown(SCORERS, value="contains", label="Scorer",
                                     elem_id="eval-scorer")
                pattern = gr.Textbox(label="regex pattern", elem_id="eval-pattern")
            with gr.Row():
                route = gr.Radio(["chat", "completions"], value="chat", label="Route")
                max_tokens = gr.Slider(1, 512, value=32, step=1, label="max_tokens")
                concurrency = gr.Slider(1, 16, value=4, step=1, label="Concurrency")
    with gr.Row():
        run = gr.Button("Run evaluation", variant="primary", elem_id="eval-run")
        cancel = gr.Button("Cancel", variant="stop", interactive=False, elem_id="eval-cancel")
    progress = gr.Markdown("", elem_id="eval-progress")
    summary = gr.Dataframe(interactive=False, label="Per configuration", elem_id="eval-summary")
    with gr.Row():
        score_plot = gr.BarPlot(x="config", y="score", y_lim=[0, 1], label="Score",
                                elem_id="eval-score-plot")
        latency_plot = gr.ScatterPlot(x="mean_seconds", y="score", color="config", y_lim=[0, 1],
                                      label="Score against mean seconds per item",
                                      elem_id="eval-latency-plot")
        # Shown when the grid varies a setting (the temperatures): score against it, per model.
        setting_plot = gr.LinePlot(x="temperature", y="score", color="model", y_lim=[0, 1],
                                   label="Score against the setting", visible=False,
                                   elem_id="eval-setting-plot")
    items = gr.Dataframe(interactive=False, wrap=True, max_height=500, elem_id="eval-items",
                         label="Per item: each configuration's answer and score")
    download = gr.DownloadButton("Download CSV", value=None, interactive=False, size="sm",
                                 elem_id="eval-download")
    current = gr.State(None)

    async def start(text: str, file: str | None, task_: str, folder_: str,
                    models_: list[str] | None, temps: str, system_: str, scorer_: str,
                    pattern_: str, route_: str, max_tokens_: float, concurrency_: float):
        try:
            spec = _spec(text, file, task_, folder_, models_, temps, system_, scorer_,
                         pattern_, route_, int(max_tokens_), int(concurrency_))
            experiment = await textgen.evaluations.start(spec)
        except TextGenError as exc:
            raise user_error(exc.message, title="Cannot run this evaluation") from None
        yield {current: experiment, run: gr.Button(interactive=False),
               cancel: gr.Button(interactive=True),
               progress: f"Running **{experiment}**: 0 of {spec.total} answers scored."}
        while (state := await textgen.evaluations.status(experiment))["status"] == "running":
            yield {progress: f"Running **{experiment}**: {state['done']} of {state['total']} "
                             "answers scored."}
            await asyncio.sleep(0.5)
        results = await textgen.evaluations.results(experiment)
        wide = results.wide()
        flat = _flat(wide)
        path = downloads.write(f"{experiment}.csv", results.items.to_csv(index=False))
        yield {current: None, run: gr.Button(interactive=True),
               cancel: gr.Button(interactive=False),
               progress: f"**{state['status'].capitalize()}**: {experiment}, "
                         f"{state['done']} of {state['total']} answers scored"
                         + (f" ({state['error']})" if state.get("error") else "") + ".",
               summary: _rounded(results.summary), score_plot: _plotted(results.summary),
               latency_plot: _plotted(results.summary), setting_plot: _against(results),
               items: flat, download: gr.DownloadButton(value=path, interactive=True)}

    inputs = [dataset, upload, task, task_folder, models, temperatures, system, scorer, pattern, route, max_tokens,
              concurrency]
    outputs = [current, run, cancel, progress, summary, score_plot, latency_plot, setting_plot,
               items, download]
    run.click(start, inputs, outputs, show_progress="hidden", concurrency_limit=None)

    async def stop(experiment: str | None) -> None:
        if experiment:
            await textgen.evaluations.cancel(experiment)

    cancel.click(stop, current, None, show_progress="hidden")

    def models_now(chosen: list[str] | None) -> gr.Dropdown:
        # The statuses in the labels change (a model loads): read them when the tab is shown.
        return gr.Dropdown(choices=picker.choices(textgen.list_models()), value=chosen)

    tab.select(models_now, models, models, show_progress="hidden", queue=False)


def _spec(text: str, file: str | None, task: str, folder: str, models: list[str] | None,
          temps: str, system: str, scorer: str, pattern: str, route: str, max_tokens: int,
          concurrency: int) -> EvaluationSpec:
    task = (task or "").strip()
    items = None if task else (datasets.load(file) if file else
                               datasets.parse(text or "", "jsonl"))
    if not models:
        raise user_error("Pick at least one model.")
    try:
        temperatures = [float(t) for t in temps.replace(" ", "").split(",") if t] or [0.0]
    except ValueError:
        raise user_error("Temperatures are numbers separated by commas, e.g. 0, 0.7.") from None
    configs = grid(models, {"temperature": temperatures, "max_tokens": [max_tokens]},
                   [system.strip() or None])
    chosen: str | dict[str, Any] = {"name": "regex", "pattern": pattern} if scorer == "regex" \
        else scorer
    return EvaluationSpec(configs=configs, items=items, scorer=chosen, route=route,  # type: ignore[arg-type]
                          concurrency=concurrency, max_tokens=max_tokens,
                          lm_eval_task=task or None,
                          lm_eval_include_path=(folder or "").strip() or None)


def _rounded(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.round(3)


def _plotted(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary's scored rows, as the plots take them."""
    return summary.dropna(subset=["score"])[["config", "score", "mean_seconds"]]


def _against(results: Results) -> gr.LinePlot:
    """Score against the setting the grid varies, one line per model; hidden when none does."""
    name = results.varying()
    if name is None:
        return gr.LinePlot(visible=False)
    frame = results.summary.dropna(subset=["score"])[["model", name, "score"]]
    return gr.LinePlot(value=frame.sort_values(name), x=name, visible=True,
                       label=f"Score against {name}")


def _flat(wide: pd.DataFrame) -> pd.DataFrame:
    """The side-by-side table with one header row: `output · config`, `score · config`."""
    if wide.empty:
        return wide
    frame = wide.copy()
    frame.columns = [f"{kind} · {config}" if config else kind for kind, config in frame.columns]
    return frame.reset_index()
