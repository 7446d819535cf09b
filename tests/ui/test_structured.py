"""The JSON boxes become request fields, or a readable refusal that names the box and the spot."""

from __future__ import annotations

import json

import gradio as gr
import pytest

from ui import forms, structured

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
TOOL = {"type": "function", "function": {"name": "get_weather",
                                         "parameters": {"type": "object", "properties": {}}}}


def test_response_formats() -> None:
    assert structured.response_format("text", "ignored") is None
    assert structured.response_format("json_object", "") == {"type": "json_object"}
    assert structured.response_format("json_schema", json.dumps(SCHEMA)) == {
        "type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA}}
    # OpenAI's whole json_schema object is taken as it is.
    wrapped = {"name": "person", "schema": SCHEMA, "strict": True}
    assert structured.response_format("json_schema", json.dumps(wrapped)) == {
        "type": "json_schema", "json_schema": wrapped}


@pytest.mark.parametrize(("text", "message"), [
    ("", "box is empty"),
    ('{"type": "object",\n  "properties": {', "not valid JSON: Expecting property name .* \\(line 2, column 18\\)"),
    ("[1, 2]", "must hold a JSON object"),
])
def test_a_bad_schema_is_refused_readably(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        structured.response_format("json_schema", text)


def test_tools_take_openai_lists_bare_functions_and_a_single_tool() -> None:
    assert structured.tools("") == []
    assert structured.tools(json.dumps([TOOL])) == [TOOL]
    assert structured.tools(json.dumps(TOOL["function"])) == [TOOL]
    bare = structured.tools('{"name": "now"}')
    assert bare == [{"type": "function", "function": {"name": "now",
                                                       "parameters": {"type": "object", "properties": {}}}}]
    assert structured.tool_names(structured.EXAMPLE_TOOLS) == ["get_weather"]
    assert structured.tool_names("[oops") == []


@pytest.mark.parametrize(("text", "message"), [
    ("[oops", "tools box is not valid JSON"),
    ("[1]", "Tool 1 .* must be a JSON object"),
    ('[{"description": "x"}]', "Tool 1 .* needs a function \"name\""),
    ('[{"name": "a"}, {"name": "a"}]', "same name"),
    ('[{"name": "a", "parameters": []}]', "must be a JSON Schema object"),
])
def test_bad_tools_are_refused_readably(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        structured.tools(text)


def test_tool_choice() -> None:
    assert structured.tool_choice("auto", []) is None  # no tools, no tool_choice
    assert structured.tool_choice("required", [TOOL]) == "required"
    assert structured.tool_choice(None, [TOOL]) == "auto"
    assert structured.tool_choice("get_weather", [TOOL]) == {
        "type": "function", "function": {"name": "get_weather"}}
    with pytest.raises(ValueError, match="not in the tools box"):
        structured.tool_choice("get_time", [TOOL])


def test_a_json_reply_is_parsed_or_explained() -> None:
    assert structured.parsed_reply('{"name": "Ada"}') == ({"name": "Ada"}, None)
    value, problem = structured.parsed_reply('{"name": "Ad')
    assert value is None and problem is not None and "max_tokens" in problem


def test_the_form_refuses_tools_outside_chat_and_bad_json_as_a_gr_error() -> None:
    with pytest.raises(gr.Error, match="Tools work in Chat mode"):
        forms.structure_options(forms.COMPLETION, "text", "", structured.EXAMPLE_TOOLS, "auto")
    with pytest.raises(gr.Error, match="not valid JSON"):
        forms.structure_options(forms.CHAT, "json_schema", "{", "", "auto")
    options = forms.structure_options(forms.CHAT, "json_object", "", structured.EXAMPLE_TOOLS,
                                      "get_weather")
    assert options["response_format"] == {"type": "json_object"}
    assert options["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_probability_options_per_mode() -> None:
    assert forms.probability_options(forms.CHAT, False, 3, True) == {}
    assert forms.probability_options(forms.CHAT, True, 3, True) == {"logprobs": True, "top_logprobs": 3}
    assert forms.probability_options(forms.COMPLETION, True, 2, True) == {"logprobs": 2, "echo": True}
    assert forms.probability_options(forms.COMPLETION, True, 0, False) == {"logprobs": 0}


def test_settings_come_back_into_the_form() -> None:
    options = {
        **forms.sampling_options(64, 0.2, 0.9, 1, "END\n\\n", 0.5, 0.0, "7", ignore_eos=True),
        **forms.probability_options(forms.CHAT, True, 4, False),
        **forms.structure_options(forms.CHAT, "json_schema", json.dumps(SCHEMA),
                                  structured.EXAMPLE_TOOLS, "get_weather"),
    }
    values = forms.settings_values(options)
    assert values["max_tokens"] == 64 and values["temperature"] == 0.2 and values["seed"] == "7"
    assert values["stop"] == "END\n\\n" and values["ignore_eos"] is True
    assert (values["show_probs"], values["top_logprobs"]) == (True, 4)
    assert values["format"] == "json_schema" and json.loads(values["schema"]) == SCHEMA
    assert structured.tool_names(values["tools"]) == ["get_weather"]
    assert values["tool_choice"] == "get_weather"
    # Rebuilt from those values, the request is the same.
    again = {
        **forms.sampling_options(values["max_tokens"], values["temperature"], values["top_p"],
                                 values["n"], values["stop"], values["presence_penalty"],
                                 values["frequency_penalty"], values["seed"],
                                 values["ignore_eos"]),
        **forms.probability_options(forms.CHAT, values["show_probs"], values["top_logprobs"], False),
        **forms.structure_options(forms.CHAT, values["format"], values["schema"], values["tools"],
                                  values["tool_choice"]),
    }
    assert again == options


def test_a_conversation_takes_one_reply() -> None:
    with pytest.raises(gr.Error, match="set n to 1"):
        forms.chat_request("m", [], {"n": 2})
