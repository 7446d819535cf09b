"""What the playground shows under a reply, in Chat and Completion alike: its figures, its
tokens coloured by probability, and a JSON reply parsed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import logprobs, structured
from ..streaming import FIGURES_CSS, Run, figures_html


@dataclass
class ReplyViews:
    figures: gr.HTML
    tokens: gr.HTML
    parsed: gr.JSON
    parsed_note: gr.Markdown

    def outputs(self) -> list[Any]:
        return [self.figures, self.tokens, self.parsed, self.parsed_note]


def build() -> ReplyViews:
    """Lay out the views inside the current Blocks context."""
    figures = gr.HTML(figures_html({"status": "ready"}), css_template=FIGURES_CSS,
                      js_on_load=None, elem_id="pg-figures")
    tokens = gr.HTML(logprobs.tokens_html([]), css_template=logprobs.LOGPROBS_CSS,
                     js_on_load=None, visible=False, elem_id="pg-tokens",
                     label="Token probabilities")
    parsed = gr.JSON(label="The reply as JSON", visible=False, elem_id="pg-json")
    parsed_note = gr.Markdown(visible=False, elem_id="pg-json-note")
    return ReplyViews(figures, tokens, parsed, parsed_note)


def live(views: ReplyViews, run: Run) -> dict[Any, Any]:
    """Updates while a run streams: figures, and tokens when probabilities were asked for."""
    out: dict[Any, Any] = {views.figures: figures_html(run.figures())}
    asked = "logprobs" in run.request.body
    if asked:
        out[views.tokens] = gr.HTML(logprobs.tokens_html(run.tokens()), visible=True)
    return out


def final(views: ReplyViews, run: Run) -> dict[Any, Any]:
    """Updates when a run ends: as `live`, plus the JSON view for a JSON response format."""
    out = live(views, run)
    if "logprobs" not in run.request.body:
        out[views.tokens] = gr.HTML(visible=False)
    wanted = run.request.body.get("response_format")
    if not wanted or run.state not in ("done", "stopped"):
        out[views.parsed] = gr.JSON(visible=False)
        out[views.parsed_note] = gr.Markdown(visible=False)
        return out
    value, problem = structured.parsed_reply(run.texts[0])
    out[views.parsed] = gr.JSON(value=value, visible=problem is None)
    out[views.parsed_note] = gr.Markdown(f"⚠ {problem}" if problem else "", visible=problem is not None)
    return out


def cleared(views: ReplyViews) -> dict[Any, Any]:
    return {views.figures: figures_html({"status": "ready"}), views.tokens: gr.HTML(visible=False),
            views.parsed: gr.JSON(visible=False), views.parsed_note: gr.Markdown(visible=False)}

