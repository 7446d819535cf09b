"""Token probabilities from chat and completion chunks (shapes as vLLM sends them), their
colours, and the chips that show the alternatives."""

from __future__ import annotations

import math
import re

import pytest

from ui import logprobs as lp
from ui.streaming import Choice

# As vLLM 0.32 streams them (captured from the in-process engine, SmolLM2).
CHAT_LOGPROBS = {"content": [
    {"token": "M", "logprob": -4.3668, "bytes": [77],
     "top_logprobs": [{"token": "I", "logprob": -2.3668}, {"token": "M", "logprob": -4.3668},
                      {"token": "Hello", "logprob": -2.3668}]},
    {"token": "!", "logprob": -0.05, "bytes": [33], "top_logprobs": [{"token": "!", "logprob": -0.05}]},
]}
ECHO_LOGPROBS = {
    "text_offset": [0, 3, 7, 10], "tokens": ["The", " sky", " is", " a"],
    "token_logprobs": [None, -12.208, -1.8032, -1.1731],
    "top_logprobs": [None, {" sky": -12.208, "-": -0.833}, {" is": -1.8032, " was": -1.678},
                     {" a": -1.1731, " the": -3.048}],
}


def test_chat_tokens_with_their_alternatives_best_first() -> None:
    tokens = lp.tokens_of(CHAT_LOGPROBS)
    assert [t.text for t in tokens] == ["M", "!"]
    assert tokens[0].probability == pytest.approx(math.exp(-4.3668))
    assert [alt for alt, _ in tokens[0].alternatives] == ["I", "Hello", "M"]


def test_completion_tokens_with_echo_mark_the_prompt() -> None:
    tokens = lp.mark_prompt(lp.tokens_of(ECHO_LOGPROBS), 3)
    assert [t.prompt for t in tokens] == [True, True, True, False]
    assert tokens[0].logprob is None and tokens[0].alternatives == ()
    assert tokens[2].alternatives[0] == (" was", -1.678)


def test_no_logprobs_no_tokens() -> None:
    assert lp.tokens_of(None) == [] and lp.tokens_of({}) == []


def _hue(css: str) -> int:
    match = re.match(r"hsl\((\d+),", css)
    assert match, css
    return int(match.group(1))


def test_colour_runs_from_red_to_green_with_the_probability() -> None:
    assert _hue(lp.colour(0.0)) == 0 and _hue(lp.colour(1.0)) == 120
    hues = [_hue(lp.colour(p / 10)) for p in range(11)]
    assert hues == sorted(hues) and len(set(hues)) == 11
    assert _hue(lp.colour(1.7)) == 120 and _hue(lp.colour(-1)) == 0  # clamped
    assert "0%" in lp.colour(None)  # grey: nothing to colour by


def test_summary_counts_only_generated_tokens() -> None:
    tokens = lp.mark_prompt(lp.tokens_of(ECHO_LOGPROBS), 3)
    figures = lp.summary(tokens)
    assert figures["tokens"] == "1"
    assert figures["perplexity"] == f"{math.exp(1.1731):.2f}"
    assert lp.summary([]) == {}


def test_chips_carry_colour_probability_and_an_alternatives_table() -> None:
    html = lp.tokens_html(lp.tokens_of(CHAT_LOGPROBS))
    assert html.count('class="tok"') == 2
    assert f'style="background:{lp.colour(math.exp(-4.3668))}"' in html
    assert 'data-p="0.0127"' in html
    assert '<tr class="chosen"><td><code>M</code></td><td>1.3%</td></tr>' in html
    assert "Hello" in html and "9.4%" in html


def test_chips_escape_html_and_keep_whitespace_tokens_visible() -> None:
    html = lp.token_html(lp.Token("<b>\n", -0.1))
    assert "&lt;b&gt;↵" in html and "<b>\n" not in html
    assert ">∅<" in lp.token_html(lp.Token("", -0.1))


def test_a_streamed_choice_gathers_text_tokens_and_tool_call_fragments() -> None:
    choice = Choice()
    chunks = [
        {"index": 0, "delta": {"role": "assistant", "content": ""}},
        {"index": 0, "delta": {"content": "M"}, "logprobs": {"content": CHAT_LOGPROBS["content"][:1]}},
        {"index": 0, "delta": {"tool_calls": [{"id": "call-1", "type": "function", "index": 0,
                                               "function": {"name": "get_weather"}}]}},
        {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}},
        {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}},
        {"index": 0, "delta": {}, "finish_reason": "tool_calls"},
    ]
    new_text = [choice.take(c) for c in chunks]
    assert new_text == [False, True, False, False, False, False]
    assert choice.text == "M" and [t.text for t in choice.tokens] == ["M"]
    assert choice.tool_calls == [{"id": "call-1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert choice.finish == "tool_calls"


def test_a_completion_choice_takes_text_and_column_logprobs() -> None:
    choice = Choice()
    choice.take({"index": 0, "text": "The sky is a", "logprobs": ECHO_LOGPROBS})
    choice.take({"index": 0, "text": " canvas", "finish_reason": "length",
                 "logprobs": {"tokens": [" canvas"], "token_logprobs": [-1.38],
                              "top_logprobs": [{" canvas": -1.38}]}})
    assert choice.text == "The sky is a canvas" and len(choice.tokens) == 5
