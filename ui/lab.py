"""`build_ui`: the lab's Gradio Blocks — playground, compare, embeddings, benchmark, evaluate,
history, models and dashboards."""

from __future__ import annotations

import gradio as gr

from textgen import TextGen

from .engine_panel import EngineHistory
from .streaming import StopButtons
from .sweep_runner import SweepGuard
from .tabs import benchmark, compare, dashboards, embeddings, evaluate, history, models, playground

HEADER = """\
## textgen lab
Chat with the models this machine serves or continue a text, see each token's probability, ask
for JSON or tool calls, compare two models, measure throughput against concurrency, and watch
the engines and the machine. The same requests work over the OpenAI-compatible API at `/v1`
([API docs](/docs)).
"""


def build_ui(textgen: TextGen, *, api_base: str | None = None) -> gr.Blocks:
    """The lab's UI around a started (or starting) `TextGen`, called in-process.

    `api_base` is the API's base URL for the "Copy as code" snippets; by default it is worked
    out from the address the browser used (the UI is mounted beside the API at `/ui`).
    """
    stops = StopButtons()
    # Shared by every page of the lab: one sweep at a time, one ring of engine readings.
    guard, engines = SweepGuard(), EngineHistory()
    with gr.Blocks(title="textgen lab", analytics_enabled=False) as demo:
        gr.Markdown(HEADER)
        # Runs finished in this browser tab: History reads the run store again on each.
        finished = gr.State(0)
        with gr.Tabs() as tabs:
            with gr.Tab("Playground", id="playground", elem_id="tab-playground") as playground_tab:
                lab = playground.build(demo, textgen, stops, finished, api_base=api_base)
            with gr.Tab("Compare", id="compare", elem_id="tab-compare") as compare_tab:
                compare.build(demo, textgen, stops)
            with gr.Tab("Embeddings", id="embeddings", elem_id="tab-embeddings") as embeddings_tab:
                embeddings.build(demo, textgen, embeddings_tab)
            with gr.Tab("Benchmark", id="benchmark", elem_id="tab-benchmark") as benchmark_tab:
                benchmark.build(demo, textgen, stops, guard, engines, benchmark_tab)
            with gr.Tab("Evaluate", id="evaluate", elem_id="tab-evaluate") as evaluate_tab:
                evaluate.build(textgen, evaluate_tab)
            with gr.Tab("History", id="history", elem_id="tab-history") as history_tab:
                history.build(textgen, finished, lab, tabs, history_tab)
            with gr.Tab("Models", id="models", elem_id="tab-models") as models_tab:
                models_timer = models.build(demo, textgen, models_tab)
            with gr.Tab("Dashboards", id="dashboards", elem_id="tab-dashboards") as dashboards_tab:
                dashboards_timer = dashboards.build(demo, textgen, dashboards_tab, engines)
        _run_timers_while_shown(
            {playground_tab: [], compare_tab: [], embeddings_tab: [], benchmark_tab: [],
             evaluate_tab: [],
             history_tab: [],
             models_tab: [models_timer], dashboards_tab: [dashboards_timer]}
        )
    return demo


def _run_timers_while_shown(timers_by_tab: dict[gr.Tab, list[gr.Timer]]) -> None:
    """Each tab's timers tick only while it is the tab shown: idle pages cost the server nothing."""
    every_timer = [t for timers in timers_by_tab.values() for t in timers]
    for tab, own in timers_by_tab.items():
        def switch(own: list[gr.Timer] = own) -> list[gr.Timer]:
            return [gr.Timer(active=any(t is o for o in own)) for t in every_timer]

        tab.select(switch, None, every_timer, queue=False, show_progress="hidden")
