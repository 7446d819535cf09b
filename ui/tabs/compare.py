"""The Compare tab: one prompt on two models (or two settings of one), streamed side by side."""

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

VIEW = "compare"


@dataclass
class Side:
    """The widgets of one side."""

    model: gr.Dropdown
    temperature: gr.Slider
    top_p: gr.Slider
    seed: gr.Textbox
    output: gr.Textbox
    figures: gr.HTML


def _side(name: str, temperature: float) -> Side:
    with gr.Column():
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
    return Side(model, temp, top_p, seed, output, figures)


def build(demo: gr.Blocks, textgen: TextGen, stops: StopButtons) -> None:
    """Lay out the tab inside the current Blocks context and wire its events."""
    gr.Markdown("Run one prompt on two models, or on one model with two settings "
                "(A starts cool, B hot). Both stream at once.")
    with gr.Row():
        prompt = gr.Textbox(label="Prompt", lines=3, scale=4, elem_id="cmp-prompt",
                            placeholder="Explain what a KV cache is in two sentences.")
        with gr.Column(scale=1, min_width=220):
            mode = gr.Radio(forms.MODES, value=forms.CHAT, label="Mode", elem_id="cmp-mode")
            max_tokens = gr.Slider(1, textgen.settings.MAX_MODEL_LEN or 4096, value=128, step=1,
                                   label="max_tokens", elem_id="cmp-max-tokens")
    with gr.Row():
        run_both = gr.Button("Run both", variant="primary", elem_id="cmp-run")
        stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="cmp-stop")
    with gr.Row(equal_height=False):
        a = _side("A", 0.2)
        b = _side("B", 1.0)

    seen = gr.State("")
    last_a, last_b = gr.State(None), gr.State(None)

    def refresh(model_a: str | None, model_b: str | None, signature: str):
        infos = textgen.list_models()
        sig = picker.signature(infos)
        if sig == signature and model_a and model_b:
            return (gr.skip(),) * 5
        fallback = picker.default_model(infos)
        options = picker.choices(infos)
        model_a, model_b = model_a or fallback, model_b or fallback
        return (gr.Dropdown(choices=options, value=model_a), gr.Dropdown(choices=options, value=model_b),
                model_a, model_b, sig)

    def chose(selected: str | None, previous: str | None) -> tuple[str | None, str | None]:
        model_id = picker.pick(textgen, selected, previous)
        return model_id, model_id

    async def run(prompt_, mode_, max_tokens_, model_a, temp_a, top_p_a, seed_a,
                  model_b, temp_b, top_p_b, seed_b, request: gr.Request):
        runs = []
        comparison = f"compare-{uuid.uuid4().hex[:12]}"  # the two runs, one experiment
        for model_id, temp, top_p, seed in ((model_a, temp_a, top_p_a, seed_a),
                                            (model_b, temp_b, top_p_b, seed_b)):
            options = {"max_tokens": int(max_tokens_), "temperature": float(temp),
                       "top_p": float(top_p)}
            if (parsed_seed := forms.parse_seed(seed)) is not None:
                options["seed"] = parsed_seed
            request_ = forms.generation_request(model_id, mode_, prompt_, options).kept_as(
                "compare", comparison)
            runs.append(Run(textgen, request_, problem=readiness_problem(textgen, model_id)))
        with stops.armed(session_of(request), VIEW) as stop_event:
            async for _ in follow(runs, stop_event):
                yield (runs[0].output(), figures_html(runs[0].figures()),
                       runs[1].output(), figures_html(runs[1].figures()),
                       *buttons(running=not all(r.finished for r in runs)))
        failed = [(name, r.error) for name, r in zip("AB", runs, strict=True) if r.state == "error"]
        if len(failed) == len(runs):
            raise user_error(" / ".join(f"{name}: {error}" for name, error in failed),
                           title="Both sides failed")
        for name, error in failed:
            gr.Warning(f"{name}: {error}", title=f"Side {name} failed")

    def press_stop(request: gr.Request) -> None:
        stops.press(session_of(request), VIEW)

    timer = gr.Timer(2.0)
    gr.on([demo.load, timer.tick], refresh, [a.model, b.model, seen],
          [a.model, b.model, last_a, last_b, seen], show_progress="hidden", queue=False)
    for side, last in ((a, last_a), (b, last_b)):
        side.model.select(chose, [side.model, last], [side.model, last], show_progress="hidden")
    inputs = [prompt, mode, max_tokens, a.model, a.temperature, a.top_p, a.seed,
              b.model, b.temperature, b.top_p, b.seed]
    run_both.click(run, inputs, [a.output, a.figures, b.output, b.figures, run_both, stop],
                   concurrency_limit=None, show_progress="hidden")
    stop.click(press_stop, None, None, queue=False)
