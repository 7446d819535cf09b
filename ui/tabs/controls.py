"""The playground's settings column: sampling, token probabilities, structured output, tools.

`Controls` holds the widgets; `options` reads an event's values into the request's fields (the
same for Chat and Completion), `updates` puts a request's settings back into the widgets.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import gradio as gr

from textgen import TextGen

from .. import forms, structured
from ..logprobs import MAX_TOP_LOGPROBS


@dataclass
class Controls:
    """The widgets, named as `forms.settings_values` names their values."""

    max_tokens: gr.Slider
    temperature: gr.Slider
    top_p: gr.Slider
    n: gr.Slider
    stop: gr.Textbox
    presence_penalty: gr.Slider
    frequency_penalty: gr.Slider
    seed: gr.Textbox
    ignore_eos: gr.Checkbox
    show_probs: gr.Checkbox
    top_logprobs: gr.Slider
    echo: gr.Checkbox
    format: gr.Radio
    schema: gr.Code
    tools: gr.Code
    tool_choice: gr.Dropdown

    def widgets(self) -> list[Any]:
        return [getattr(self, f.name) for f in fields(self)]

    def sampling(self, data: dict[Any, Any]) -> dict[str, Any]:
        return forms.sampling_options(
            data[self.max_tokens], data[self.temperature], data[self.top_p], data[self.n],
            data[self.stop], data[self.presence_penalty], data[self.frequency_penalty],
            data[self.seed], data[self.ignore_eos])

    def options(self, data: dict[Any, Any], mode: str) -> dict[str, Any]:
        """Every request field the column sets, for `mode`; a readable gr.Error if one is bad."""
        return {
            **self.sampling(data),
            **forms.probability_options(mode, data[self.show_probs], data[self.top_logprobs],
                                        data[self.echo]),
            **forms.structure_options(mode, data[self.format], data[self.schema],
                                      data[self.tools], data[self.tool_choice]),
        }

    def updates(self, settings: dict[str, Any]) -> dict[Any, Any]:
        """Widget updates that show a request's settings."""
        values = forms.settings_values(settings)
        out: dict[Any, Any] = {getattr(self, name): value for name, value in values.items()}
        if "tools" in values:
            out[self.tool_choice] = gr.Dropdown(
                choices=[*structured.TOOL_CHOICES, *structured.tool_names(values["tools"])],
                value=values["tool_choice"])
        return out


def build(textgen: TextGen) -> Controls:
    """Lay out the column inside the current Blocks context and wire its own events."""
    d = forms.DEFAULTS
    gr.Markdown("#### Sampling")
    max_tokens = gr.Slider(1, textgen.settings.MAX_MODEL_LEN or 4096, value=d["max_tokens"],
                           step=1, label="max_tokens", elem_id="pg-max-tokens")
    temperature = gr.Slider(0.0, 2.0, value=d["temperature"], step=0.05, label="temperature",
                            elem_id="pg-temperature")
    top_p = gr.Slider(0.05, 1.0, value=d["top_p"], step=0.05, label="top_p")
    n = gr.Slider(1, 4, value=d["n"], step=1, label="n", info="completions per prompt")
    stop = gr.Textbox(label="stop", lines=2, placeholder="one sequence per line; \\n = newline")
    presence = gr.Slider(-2.0, 2.0, value=d["presence_penalty"], step=0.1, label="presence_penalty")
    frequency = gr.Slider(-2.0, 2.0, value=d["frequency_penalty"], step=0.1, label="frequency_penalty")
    seed = gr.Textbox(label="seed", placeholder="random", info="a whole number repeats a sample")
    ignore_eos = gr.Checkbox(label="ignore_eos", value=False, elem_id="pg-ignore-eos",
                             info="vLLM: generate exactly max_tokens, past the end-of-text token "
                                  "(for measuring speed)")
    with gr.Accordion("Token probabilities", open=True, elem_id="pg-probs-box"):
        show_probs = gr.Checkbox(label="Show token probabilities", value=False,
                                 elem_id="pg-logprobs",
                                 info="colours each token by its probability; hover one for the "
                                      "alternatives")
        top_logprobs = gr.Slider(0, MAX_TOP_LOGPROBS, value=3, step=1, label="alternatives per token",
                                 info="top_logprobs (chat) / logprobs (completion)",
                                 elem_id="pg-top-logprobs")
        echo = gr.Checkbox(label="Completion: the prompt's tokens too (echo)", value=False,
                           elem_id="pg-echo")
    with gr.Accordion("Structured output", open=False, elem_id="pg-structured"):
        response_format = gr.Radio(structured.FORMATS, value=structured.TEXT,
                                   label="response_format", elem_id="pg-format",
                                   info="json_object: any JSON; json_schema: JSON matching the "
                                        "schema below")
        schema = gr.Code(structured.EXAMPLE_SCHEMA, language="json", label="JSON schema",
                         interactive=True, lines=8, elem_id="pg-schema")
    with gr.Accordion("Tools", open=False, elem_id="pg-tools-box"):
        gr.Markdown("Function definitions (OpenAI's `tools` list). The model's calls show as "
                    "cards in the conversation; type a result to continue.")
        tools = gr.Code("", language="json", label="tools", interactive=True, lines=8,
                        elem_id="pg-tools")
        with gr.Row():
            example = gr.Button("Insert an example tool", size="sm", elem_id="pg-tools-example")
            tool_choice = gr.Dropdown(structured.TOOL_CHOICES, value="auto", label="tool_choice",
                                      allow_custom_value=True, elem_id="pg-tool-choice",
                                      info="auto, required, none, or a function's name")

    def offered_choices(text: str | None, current: str | None) -> gr.Dropdown:
        names = structured.tool_names(text)
        choices = [*structured.TOOL_CHOICES, *names]
        return gr.Dropdown(choices=choices, value=current if current in choices else "auto")

    tools.change(offered_choices, [tools, tool_choice], tool_choice, queue=False,
                 show_progress="hidden")
    example.click(lambda: structured.EXAMPLE_TOOLS, None, tools, queue=False)
    return Controls(max_tokens, temperature, top_p, n, stop, presence, frequency, seed, ignore_eos,
                    show_probs, top_logprobs, echo, response_format, schema, tools, tool_choice)
