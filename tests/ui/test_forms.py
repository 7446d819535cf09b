"""The playground's form values become the core's request, or a readable refusal."""

from __future__ import annotations

import gradio as gr
import pytest

from ui import forms


def test_stop_sequences_one_per_line_with_escapes() -> None:
    assert forms.parse_stop("\\n\\n\nEND\n\n") == ["\n\n", "END"]
    assert forms.parse_stop("") == []
    assert forms.parse_stop(None) == []


def test_more_than_four_stop_sequences_are_refused() -> None:
    with pytest.raises(gr.Error, match="At most 4"):
        forms.parse_stop("a\nb\nc\nd\ne")


@pytest.mark.parametrize(("given", "seed"), [("", None), (None, None), ("42", 42), (7.0, 7)])
def test_seed(given: object, seed: int | None) -> None:
    assert forms.parse_seed(given) == seed  # type: ignore[arg-type]


def test_a_seed_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(gr.Error, match="whole number"):
        forms.parse_seed("abc")


def test_chat_and_completion_requests() -> None:
    options = forms.sampling_options(64, 0.5, 0.9, 2, "END", 0.1, 0.2, "5")
    assert options == {"max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "n": 2,
                       "stop": ["END"], "presence_penalty": 0.1, "frequency_penalty": 0.2, "seed": 5}
    chat = forms.generation_request("m", forms.CHAT, "hi", options)
    assert chat.endpoint == "chat" and chat.stream
    assert chat.body["messages"] == [{"role": "user", "content": "hi"}]
    completion = forms.generation_request("m", forms.COMPLETION, "hi", options)
    assert completion.endpoint == "completions" and completion.body["prompt"] == "hi"
    assert {k: completion.body[k] for k in options} == options
    unset = forms.sampling_options(16, 1, 1, 1, "", 0, 0, "")
    assert "stop" not in unset and "seed" not in unset


def test_a_missing_model_or_prompt_is_refused() -> None:
    options = forms.sampling_options(16, 1, 1, 1, "", 0, 0, "")
    with pytest.raises(gr.Error, match="Pick a model"):
        forms.generation_request(None, forms.CHAT, "hi", options)
    with pytest.raises(gr.Error, match="Type a prompt"):
        forms.generation_request("m", forms.CHAT, "   ", options)
