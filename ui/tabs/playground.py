"""The Playground tab: pick a model, tune sampling, stream the output, stop it, copy as code."""

from __future__ import annotations

import gradio as gr

from textgen import TextGen

from .. import forms, picker, snippets
from ..errors import user_error
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

VIEW = "playground"


def api_base_of(request: gr.Request | None, fallback: str | None) -> str:
    """Where the browser reached us, as the API's base URL (the UI is mounted beside /v1)."""
    if fallback:
        return fallback
    headers = getattr(request, "headers", None) or {}
    host = headers.get("x-forwarded-host") or headers.get("host") or "127.0.0.1:8000"
    scheme = headers.get("x-forwarded-proto") or "http"
    return f"{scheme}://{host}/v1"


def build(demo: gr.Blocks, textgen: TextGen, stops: StopButtons, *, api_base: str | None) -> None:
    """Lay out the tab inside the current Blocks context and wire its events."""
    auth = bool(textgen.settings.api_tokens())
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row(equal_height=True):
                model = gr.Dropdown(label="Model", choices=[], scale=5, elem_id="pg-model")
                load = gr.Button("Load", scale=1, min_width=80, visible=False, elem_id="pg-load")
            about = gr.Markdown(elem_id="pg-model-info")
            mode = gr.Radio(forms.MODES, value=forms.CHAT, label="Mode", elem_id="pg-mode",
                            info="Chat applies the model's chat template; Completion continues the text.")
            prompt = gr.Textbox(label="Prompt", lines=5, elem_id="pg-prompt",
                                placeholder="Write a haiku about GPUs.")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="pg-generate")
                stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="pg-stop")
            output = gr.Textbox(label="Output", lines=10, max_lines=30, interactive=False,
                                autoscroll=True, buttons=["copy"], elem_id="pg-output")
            figures = gr.HTML(figures_html({"status": "ready"}), css_template=FIGURES_CSS,
                              js_on_load=None, elem_id="pg-figures")
            with gr.Accordion("Copy as code", open=False, elem_id="pg-code"):
                gr.Markdown("The same request against this lab's OpenAI-compatible API"
                            + (f"; the token is read from `${snippets.TOKEN_VARIABLE}`." if auth else "."))
                with gr.Tabs():
                    with gr.Tab("curl"):
                        curl = gr.Code(language="shell", show_label=False, interactive=False)
                    with gr.Tab("httpx"):
                        httpx = gr.Code(language="python", show_label=False, interactive=False)
                    with gr.Tab("openai"):
                        openai = gr.Code(language="python", show_label=False, interactive=False)
        with gr.Column(scale=2, min_width=260):
            gr.Markdown("#### Sampling")
            d = forms.DEFAULTS
            max_tokens = gr.Slider(1, textgen.settings.MAX_MODEL_LEN or 4096, value=d["max_tokens"],
                                   step=1, label="max_tokens", elem_id="pg-max-tokens")
            temperature = gr.Slider(0.0, 2.0, value=d["temperature"], step=0.05, label="temperature",
                                    elem_id="pg-temperature")
            top_p = gr.Slider(0.05, 1.0, value=d["top_p"], step=0.05, label="top_p")
            n = gr.Slider(1, 4, value=d["n"], step=1, label="n", info="completions per prompt")
            stop_text = gr.Textbox(label="stop", lines=2, placeholder="one sequence per line; \\n = newline")
            presence = gr.Slider(-2.0, 2.0, value=d["presence_penalty"], step=0.1, label="presence_penalty")
            frequency = gr.Slider(-2.0, 2.0, value=d["frequency_penalty"], step=0.1, label="frequency_penalty")
            seed = gr.Textbox(label="seed", placeholder="random", info="a whole number repeats a sample")

    last_model = gr.State(None)
    seen = gr.State("")
    settings = [max_tokens, temperature, top_p, n, stop_text, presence, frequency, seed]

    def refresh(current: str | None, signature: str):
        infos = textgen.list_models()
        sig = picker.signature(infos)
        if sig == signature and current:
            return (gr.skip(),) * 6
        chosen = current or picker.default_model(infos)
        info = picker.info_or_none(textgen, chosen)
        # The first fill of a page also picks the mode that suits the model.
        new_mode = gr.skip() if current or info is None else (
            forms.CHAT if info.instruct else forms.COMPLETION)
        return (gr.Dropdown(choices=picker.choices(infos), value=chosen), chosen,
                picker.describe(info) if info else "",
                gr.Button(visible=info is not None and info.status in ("not_loaded", "error")),
                sig, new_mode)

    def chose(selected: str | None, previous: str | None):
        model_id = picker.pick(textgen, selected, previous)
        info = picker.info_or_none(textgen, model_id)
        new_mode = gr.skip() if info is None or model_id == previous else (
            forms.CHAT if info.instruct else forms.COMPLETION)
        return (model_id, model_id, picker.describe(info) if info else "",
                gr.Button(visible=info is not None and info.status in ("not_loaded", "error")), new_mode)

    async def load_selected(model_id: str | None):
        async for line in picker.load_progress(textgen, model_id):
            yield line
        info = picker.info_or_none(textgen, model_id)
        yield picker.describe(info) if info else ""

    def code(model_id, mode_, prompt_, max_tokens_, temperature_, top_p_, n_, stop_, presence_,
             frequency_, seed_, request: gr.Request):
        try:
            options = forms.sampling_options(max_tokens_, temperature_, top_p_, n_, stop_,
                                             presence_, frequency_, seed_)
            request_ = forms.generation_request(model_id or "MODEL", mode_, prompt_, options,
                                                require_prompt=False)
        except gr.Error:
            return gr.skip(), gr.skip(), gr.skip()
        return snippets.snippets(request_, api_base_of(request, api_base), auth=auth)

    async def run(model_id, mode_, prompt_, max_tokens_, temperature_, top_p_, n_, stop_,
                  presence_, frequency_, seed_, request: gr.Request):
        options = forms.sampling_options(max_tokens_, temperature_, top_p_, n_, stop_, presence_,
                                         frequency_, seed_)
        request_ = forms.generation_request(model_id, mode_, prompt_, options)
        problem = readiness_problem(textgen, request_.model)
        if problem:
            raise user_error(problem, title="Model not ready")
        current = Run(textgen, request_)
        with stops.armed(session_of(request), VIEW) as stop_event:
            async for _ in follow([current], stop_event):
                yield (current.output(), figures_html(current.figures()),
                       *buttons(running=not current.finished))
        if current.state == "error":
            raise user_error(current.error or "The generation failed.", title="Generation failed")

    def press_stop(request: gr.Request) -> None:
        stops.press(session_of(request), VIEW)

    # Model status changes (the default model finishing its load, a load from the Models
    # tab) show up within two seconds; the timer sends nothing while nothing changed.
    timer = gr.Timer(2.0)
    gr.on([demo.load, timer.tick], refresh, [last_model, seen],
          [model, last_model, about, load, seen, mode],
          show_progress="hidden", queue=False)
    # Queued (not queue=False): only queued events can show the warning for an unavailable model.
    model.select(chose, [model, last_model], [model, last_model, about, load, mode],
                show_progress="hidden")
    load.click(load_selected, model, about, concurrency_limit=None)
    code_inputs = [model, mode, prompt, *settings]
    gr.on([c.change for c in code_inputs], code, code_inputs, [curl, httpx, openai],
          show_progress="hidden", queue=False, trigger_mode="always_last")
    generate.click(run, [model, mode, prompt, *settings], [output, figures, generate, stop],
                   concurrency_limit=None, show_progress="hidden")
    stop.click(press_stop, None, None, queue=False)
