"""The Compare tab: one prompt on up to four columns of model × settings (an adapter is a
model), streamed side by side, each with its figures; the runs are kept as one experiment."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import gradio as gr

from textgen import TextGen

from .. import forms, picker
from ..alerts import user_error
from ..streaming import (
    FIGURES_CSS,
    Run,
    StopButtons,
    buttons,
    figures_html,
    follow,
    readiness_problem,
    session_of,
)
from . import arena

VIEW = "compare"
# The columns and the temperature each starts with: A cool, B hot, C in between, D greedy.
COLUMNS = {"A": 0.2, "B": 1.0, "C": 0.7, "D": 0.0}
SHOWN = 2  # columns shown on a fresh page


@dataclass
class Side:
    """The widgets of one column."""

    column: gr.Column
    model: gr.Dropdown
    temperature: gr.Slider
    top_p: gr.Slider
    seed: gr.Textbox
    output: gr.Textbox
    figures: gr.HTML


def _side(name: str, temperature: float, visible: bool) -> Side:
    with gr.Column(visible=visible, elem_id=f"cmp-column-{name.lower()}") as column:
        gr.Markdown(f"#### {name}")
        model = gr.Dropdown(label="Model", choices=[], elem_id=f"cmp-model-{name.lower()}")
        with gr.Row():
            temp = gr.Slider(0.0, 2.0, value=temperature, step=0.05, label="temperature",
                             elem_id=f"cmp-temperature-{name.lower()}")
            top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="top_p")
            seed = gr.Textbox(label="seed", placeholder="random", min_width=100)
        output = gr.Textbox(label=f"Output {name}", lines=10, max_lines=30, interactive=False,
                            autoscroll=True, elem_id=f"cmp-output-{name.lower()}")
        figures = gr.HTML(figures_html({"status": "ready"}), css_template=FIGURES_CSS,
                          js_on_load=None, elem_id=f"cmp-figures-{name.lower()}")
    return Side(column, model, temp, top_p, seed, output, figures)


def build(demo: gr.Blocks, textgen: TextGen, stops: StopButtons) -> None:
    """Lay out the tab inside the current Blocks context and wire its events."""
    gr.Markdown("Run one prompt on two to four columns: models, adapters, or one model with "
                "other settings (A starts cool, B hot, C in between, D greedy). All stream at "
                "once.")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=3, scale=4, elem_id="cmp-prompt",
                            placeholder="Explain what a KV cache is in two sentences.")
        with gr.Column(scale=1, min_width=220):
            mode = gr.Radio(forms.MODES, value=forms.CHAT, label="Mode", elem_id="cmp-mode")
            max_tokens = gr.Slider(1, textgen.settings.MAX_MODEL_LEN or 4096, value=128, step=1,
                                   label="max_tokens", elem_id="cmp-max-tokens")
            count = gr.Radio([2, 3, 4], value=SHOWN, label="Columns", elem_id="cmp-columns")
    with gr.Row():
        run_all = gr.Button("Run all", variant="primary", elem_id="cmp-run")
        stop = gr.Button("Stop", variant="stop", elem_id="cmp-stop")  # always: streaming.buttons
    with gr.Row(equal_height=False):
        sides = [_side(name, temp, i < SHOWN) for i, (name, temp) in enumerate(COLUMNS.items())]

    seen = gr.State("")
    lasts = [gr.State(None) for _ in sides]

    def refresh(signature: str, *models: str | None):
        infos = textgen.list_models()
        sig = picker.signature(infos)
        if sig == signature and all(models):
            return (gr.skip(),) * (2 * len(sides) + 1)
        fallback = picker.default_model(infos)
        options = picker.choices(infos)
        chosen = [m or fallback for m in models]
        return (*(gr.Dropdown(choices=options, value=m) for m in chosen), *chosen, sig)

    def chose(selected: str | None, previous: str | None) -> tuple[str | None, str | None]:
        model_id = picker.pick(textgen, selected, previous)
        return model_id, model_id

    def show_columns(n: int):
        return [gr.Column(visible=i < int(n)) for i in range(len(sides))]

    async def run(prompt_, mode_, max_tokens_, n,
                  a_model, a_temperature, a_top_p, a_seed, b_model, b_temperature, b_top_p, b_seed,
                  c_model, c_temperature, c_top_p, c_seed, d_model, d_temperature, d_top_p, d_seed,
                  request: gr.Request):
        # Gradio passes gr.Request only to a parameter it can see: no *args here.
        values = (a_model, a_temperature, a_top_p, a_seed, b_model, b_temperature, b_top_p,
                  b_seed, c_model, c_temperature, c_top_p, c_seed, d_model, d_temperature,
                  d_top_p, d_seed)
        shown = list(COLUMNS)[:int(n)]
        comparison = f"compare-{uuid.uuid4().hex[:12]}"  # the columns' runs, one experiment
        runs = [Run(textgen, c.request(mode_, prompt_, max_tokens_, comparison),
                    problem=readiness_problem(textgen, c.model))
                for c in arena.columns(len(shown), values)]
        idle = (gr.skip(), gr.skip()) * (len(sides) - len(runs))
        with stops.armed(session_of(request), VIEW) as stop_event:
            async for _ in follow(runs, stop_event):
                shown_now = [x for r in runs for x in (r.output(), figures_html(r.figures()))]
                yield (*shown_now, *idle,
                       buttons(running=not all(r.finished for r in runs)))
        failed = [(name, r.error) for name, r in zip(shown, runs, strict=True)
                  if r.state == "error"]
        if len(failed) == len(runs):
            raise user_error(" / ".join(f"{name}: {error}" for name, error in failed),
                             title="Every column failed")
        for name, error in failed:
            gr.Warning(f"{name}: {error}", title=f"Column {name} failed")

    async def press_stop(request: gr.Request) -> None:
        stops.press(session_of(request), VIEW)

    timer = gr.Timer(2.0)
    models = [side.model for side in sides]
    gr.on([demo.load, timer.tick], refresh, [seen, *models], [*models, *lasts, seen],
          show_progress="hidden", queue=False)
    for side, last in zip(sides, lasts, strict=True):
        side.model.select(chose, [side.model, last], [side.model, last], show_progress="hidden")
    count.change(show_columns, count, [side.column for side in sides], queue=False,
                 show_progress="hidden")
    inputs = [prompt, mode, max_tokens, count,
              *(w for side in sides for w in (side.model, side.temperature, side.top_p,
                                              side.seed))]
    outputs = [w for side in sides for w in (side.output, side.figures)]
    run_all.click(run, inputs, [*outputs, run_all], concurrency_limit=None,
                  show_progress="hidden")
    stop.click(press_stop, None, None, concurrency_limit=None)
    arena.build(demo, textgen, stops, prompt, mode, max_tokens, count, inputs[4:])
