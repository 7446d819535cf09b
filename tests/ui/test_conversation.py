"""A conversation is the OpenAI `messages` list; the chat view's actions are functions of it."""

from __future__ import annotations

import json

import pytest

from ui import conversation as conv

CALL = {"id": "call-1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


def _two_turns() -> conv.Turns:
    return [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Germany?"},
        {"role": "assistant", "content": "Berlin."},
    ]


def test_messages_put_the_system_prompt_first_and_leave_it_out_when_blank() -> None:
    turns = _two_turns()[:1]
    assert conv.messages("Be brief.", turns) == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    assert conv.messages("  ", turns) == turns
    assert conv.messages(None, []) == []


def test_messages_are_copies_the_request_cannot_change_the_conversation() -> None:
    turns = _two_turns()
    sent = conv.messages("", turns)
    sent[0]["content"] = "changed"
    assert turns[0]["content"] == "Capital of France?"


def test_an_assistant_turn_with_tool_calls_has_null_content_as_openai_sends_it() -> None:
    assert conv.assistant_turn("", [CALL]) == {"role": "assistant", "content": None,
                                               "tool_calls": [CALL]}
    assert conv.assistant_turn("Hi") == {"role": "assistant", "content": "Hi"}


def test_regenerate_drops_only_the_last_reply() -> None:
    assert conv.without_last_reply(_two_turns()) == _two_turns()[:3]
    with pytest.raises(ValueError, match="no reply to regenerate"):
        conv.without_last_reply(_two_turns()[:3])
    with pytest.raises(ValueError):
        conv.without_last_reply([])


def test_regenerate_after_a_tool_result_answers_the_result_again() -> None:
    turns = [{"role": "user", "content": "Weather?"}, conv.assistant_turn("", [CALL]),
             {"role": "tool", "tool_call_id": "call-1", "content": "18 C"},
             {"role": "assistant", "content": "It is 18 C."}]
    assert conv.without_last_reply(turns) == turns[:3]


def test_edit_and_resend_replaces_the_user_turn_and_drops_what_followed() -> None:
    turns = _two_turns()
    assert conv.edited(turns, 0, "Capital of Italy?") == [{"role": "user", "content": "Capital of Italy?"}]
    assert conv.edited(turns, 2, "And Spain?") == [*turns[:2], {"role": "user", "content": "And Spain?"}]
    with pytest.raises(ValueError, match="Only your own messages"):
        conv.edited(turns, 1, "x")
    with pytest.raises(ValueError, match="cannot be empty"):
        conv.edited(turns, 0, "   ")


def test_bubbles_map_back_to_their_turns_with_tool_call_cards_in_between() -> None:
    turns = [{"role": "user", "content": "Weather in Paris and Rome?"},
             conv.assistant_turn("Let me look.", [CALL, {**CALL, "id": "call-2"}]),
             {"role": "tool", "tool_call_id": "call-1", "content": "18 C"},
             {"role": "user", "content": "Thanks"}]
    bubbles = conv.display(turns)
    assert [b["role"] for b in bubbles] == ["user", "assistant", "assistant", "assistant", "user", "user"]
    assert bubbles[2]["metadata"]["title"] == "⚙ Tool call · get_weather"
    assert '"city": "Paris"' in bubbles[2]["content"]
    assert bubbles[4]["metadata"]["title"] == "↩ Tool result · get_weather"
    assert [conv.turn_of(turns, i) for i in range(len(bubbles))] == [0, 1, 1, 1, 2, 3]
    with pytest.raises(IndexError):
        conv.turn_of(turns, len(bubbles))


def test_a_reply_being_streamed_shows_after_the_turns() -> None:
    bubbles = conv.display(_two_turns()[:1], conv.assistant_turn("Par"))
    assert bubbles[-1] == {"role": "assistant", "content": "Par"}
    # Nothing yet: an empty bubble says a reply is coming.
    assert conv.display([], conv.assistant_turn(""))[-1] == {"role": "assistant", "content": ""}


def test_a_tool_call_card_says_when_its_arguments_are_not_json() -> None:
    card = conv.tool_call_card({**CALL, "function": {"name": "f", "arguments": '"Me"x'}})
    assert "not valid JSON" in card and '"Me"x' in card


def test_tool_results_answer_pending_calls_in_order() -> None:
    turns = [{"role": "user", "content": "Weather?"},
             conv.assistant_turn("", [CALL, {**CALL, "id": "call-2"}])]
    assert [c["id"] for c in conv.pending_tool_calls(turns)] == ["call-1", "call-2"]
    turns = conv.with_tool_result(turns, "18 C")
    assert turns[-1] == {"role": "tool", "tool_call_id": "call-1", "content": "18 C"}
    assert [c["id"] for c in conv.pending_tool_calls(turns)] == ["call-2"]
    turns = conv.with_tool_result(turns, "21 C")
    assert conv.pending_tool_calls(turns) == []
    with pytest.raises(ValueError, match="No tool call"):
        conv.with_tool_result(turns, "x")
    assert conv.pending_tool_calls([*turns, {"role": "user", "content": "ok"}]) == []


def test_export_then_import_gives_back_the_conversation_and_its_settings() -> None:
    settings = {"temperature": 0.2, "max_tokens": 64, "tools": [{"type": "function",
                                                                  "function": {"name": "f"}}]}
    turns = [*_two_turns()[:3], conv.assistant_turn("", [CALL])]
    document = conv.export("m", "Be brief.", turns, settings)
    assert document["messages"][0] == {"role": "system", "content": "Be brief."}
    model, system, back, back_settings = conv.parse_import(json.dumps(document))
    assert (model, system, back, back_settings) == ("m", "Be brief.", turns, settings)


def test_import_takes_a_bare_messages_list_too() -> None:
    model, system, turns, settings = conv.parse_import(json.dumps(conv.messages("S", _two_turns())))
    assert (model, system, turns, settings) == (None, "S", _two_turns(), {})


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not JSON"),
    ('{"model": "m"}', "\"messages\" list"),
    ('[{"role": "robot", "content": "x"}]', "Message 1 needs a \"role\""),
    ('[{"role": "user"}]', "Message 1 has no content"),
    ('[{"role": "user", "content": "x"}, {"role": "system", "content": "y"}]', "first message"),
    ('{"messages": [], "settings": [1]}', "\"settings\" must be"),
])
def test_a_bad_import_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        conv.parse_import(text)
