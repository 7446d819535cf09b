"""The Playground tab: pick a model, hold a conversation (Chat) or continue a text (Completion),
tune the settings, see token probabilities and JSON replies, stop, copy as code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from textgen import TextGen

from .. import conversation, forms, picker, snippets
from ..alerts import user_error
from ..streaming import (
    Run,
    StopButtons,
    buttons,
    follow,
    readiness_problem,
    session_of,
)
from . import chat, controls, replies
from .chat import ChatView
from .controls import Controls
from .replies import ReplyViews

VIEW = "playground"


@dataclass
class Playground:
    """The widgets another tab fills in (History reopens a run here)."""

    model: gr.Dropdown
    last_model: gr.State
    mode: gr.Radio
    prompt: gr.Textbox
    output: gr.Textbox
    completion: gr.Column
    chat: ChatView
    controls: Controls
    views: ReplyViews


def api_base_of(request: gr.Request | None, fallback: str | None) -> str:
    """Where the browser reached us, as the API's base URL (the UI is mounted beside /v1)."""
    if fallback:
        return fallback
    headers = getattr(request, "headers", None) or {}
    host = headers.get("x-forwarded-host") or headers.get("host") or "127.0.0.1:8000"
    scheme = headers.get("x-forwarded-proto") or "http"
    return f"{scheme}://{host}/v1"


def build(demo: gr.Blocks, textgen: TextGen, stops: StopButtons, finished: gr.State, *,
          api_base: str | None) -> Playground:
    """Lay out the tab inside the current Blocks context and wire its events."""
    auth = bool(textgen.settings.api_tokens())
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            with gr.Row(equal_height=True):
                model = gr.Dropdown(label="Model", choices=[], scale=5, elem_id="pg-model")
                load = gr.Button("Load", scale=1, min_width=80, visible=False, elem_id="pg-load")
            about = gr.Markdown(elem_id="pg-model-info")
            mode = gr.Radio(forms.MODES, value=forms.CHAT, label="Mode", elem_id="pg-mode",
                            info="Chat: a conversation through the model's chat template. "
                                 "Completion: the model continues your text (base models).")
            chat_view = chat.build_view(visible=True)
            with gr.Column(visible=False, elem_id="pg-completion-view") as completion:
                prompt = gr.Textbox(label="Prompt", lines=5, elem_id="pg-prompt",
                                    placeholder="Once upon a time")
                with gr.Row():
                    generate = gr.Button("Generate", variant="primary", elem_id="pg-generate")
                    # Always clickable, and no output of a generation: streaming.buttons
                    # says why. Generate still says whether something runs.
                    stop = gr.Button("Stop", variant="stop", elem_id="pg-stop")
                output = gr.Textbox(label="Output", lines=10, max_lines=30, interactive=False,
                                    autoscroll=True, buttons=["copy"], elem_id="pg-output")
            views = replies.build()
            with gr.Accordion("Copy as code", open=False, elem_id="pg-code"):
                gr.Markdown("The next request (in Chat: the whole conversation and your message) "
                            "against this lab's OpenAI-compatible API"
                            + (f"; the token is read from `${snippets.TOKEN_VARIABLE}`." if auth else "."))
                with gr.Tabs():
                    with gr.Tab("openai"):
                        openai = gr.Code(language="python", show_label=False, interactive=False,
                                         elem_id="pg-code-openai")
                    with gr.Tab("curl"):
                        curl = gr.Code(language="shell", show_label=False, interactive=False,
                                       elem_id="pg-code-curl")
                    with gr.Tab("httpx"):
                        httpx = gr.Code(language="python", show_label=False, interactive=False)
        with gr.Column(scale=2, min_width=280):
            settings = controls.build(textgen)

    last_model = gr.State(None)
    seen = gr.State("")

    def shown(mode_: str) -> tuple[gr.Column, gr.Column]:
        return gr.Column(visible=mode_ == forms.CHAT), gr.Column(visible=mode_ != forms.CHAT)

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

    code_inputs = {model, mode, prompt, chat_view.system, chat_view.turns, chat_view.message,
                   *settings.widgets()}

    def code(data: dict[Any, Any], request: gr.Request):
        mode_ = data[mode]
        try:
            options = settings.options(data, mode_)
            model_id = data[model] or "MODEL"
            if mode_ == forms.CHAT:
                turns = list(data[chat_view.turns] or [])
                if (data[chat_view.message] or "").strip():
                    turns.append({"role": "user", "content": data[chat_view.message]})
                request_ = forms.chat_request(
                    model_id, conversation.messages(data[chat_view.system], turns), options)
            else:
                request_ = forms.generation_request(model_id, mode_, data[prompt], options,
                                                    require_prompt=False)
        except gr.Error:
            return gr.skip(), gr.skip(), gr.skip()
        return snippets.snippets(request_, api_base_of(request, api_base), auth=auth)

    async def run(data: dict[Any, Any], request: gr.Request):
        options = settings.options(data, forms.COMPLETION)
        request_ = forms.generation_request(data[model], forms.COMPLETION, data[prompt], options)
        problem = readiness_problem(textgen, request_.model)
        if problem:
            raise user_error(problem, title="Model not ready")
        current = Run(textgen, request_)
        with stops.armed(session_of(request), VIEW) as stop_event:
            async for _ in follow([current], stop_event):
                yield {output: current.output(), generate: buttons(running=not current.finished),
                       **replies.live(views, current)}
        yield {output: current.output(), generate: buttons(running=False),
               finished: (data[finished] or 0) + 1,  # kept by the core: History reads it
               **replies.final(views, current)}
        if current.state == "error":
            raise user_error(current.error or "The generation failed.", title="Generation failed")

    async def press_stop(request: gr.Request) -> None:
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
    mode.change(shown, mode, [chat_view.column, completion], queue=False, show_progress="hidden")
    gr.on([c.change for c in code_inputs], code, code_inputs, [curl, httpx, openai],
          show_progress="hidden", queue=False, trigger_mode="always_last")
    generate.click(run, {model, prompt, finished, *settings.widgets()},
                   [output, generate, finished, *views.outputs()],
                   concurrency_limit=None, show_progress="hidden")
    stop.click(press_stop, None, None, concurrency_limit=None)
    chat.wire(chat_view, textgen, stops, model=model, controls=settings, views=views, finished=finished)
    return Playground(model, last_model, mode, prompt, output, completion, chat_view, settings,
                      views)
