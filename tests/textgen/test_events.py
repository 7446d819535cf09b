"""The typed events of Responses and Messages streams: when an answer is whole, its usage,
and the one object it adds up to. The event shapes are vLLM's (its serving classes'); the
real streams are compared with vLLM's server in tests/api/test_responses_messages.py."""

from __future__ import annotations

from textgen import events

MESSAGE_EVENTS = [
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                          "content": [], "model": "m", "stop_reason": None,
                                          "usage": {"input_tokens": 9, "output_tokens": 0}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Red, "}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "blue"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1,
     "content_block": {"type": "tool_use", "id": "t1", "name": "paint", "input": {}}},
    {"type": "content_block_delta", "index": 1,
     "delta": {"type": "input_json_delta", "partial_json": '{"colour": '}},
    {"type": "content_block_delta", "index": 1,
     "delta": {"type": "input_json_delta", "partial_json": '"red"}'}},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
     "usage": {"output_tokens": 7}},
    {"type": "message_stop"},
]


def test_a_message_stream_adds_up_to_anthropics_message() -> None:
    message = events.merge("messages", MESSAGE_EVENTS)
    assert message["id"] == "msg_1" and message["stop_reason"] == "tool_use"
    assert message["content"] == [
        {"type": "text", "text": "Red, blue"},
        {"type": "tool_use", "id": "t1", "name": "paint", "input": {"colour": "red"}}]
    assert message["usage"] == {"input_tokens": 9, "output_tokens": 7}
    assert events.finished("messages", events=MESSAGE_EVENTS)
    assert not events.finished("messages", events=MESSAGE_EVENTS[:-1])  # cut short
    assert events.finished("messages", response=message)
    usage = None
    for event in MESSAGE_EVENTS:
        usage = events.take_usage("messages", usage, event)
    assert usage == {"input_tokens": 9, "output_tokens": 7}


def test_a_responses_stream_adds_up_to_its_last_response() -> None:
    done = {"id": "resp_1", "object": "response", "status": "completed", "output": [],
            "usage": {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}}
    stream = [
        {"type": "response.created", "response": {**done, "status": "in_progress", "usage": None}},
        {"type": "response.output_text.delta", "delta": "Hi", "item_id": "msg_1"},
        {"type": "response.completed", "response": done},
    ]
    assert events.merge("responses", stream) == done
    assert events.finished("responses", events=stream)
    assert not events.finished("responses", events=stream[:2])
    assert not events.finished("responses", response={**done, "status": "failed"})
    # Stopped at max_output_tokens: a natural end (a chat's "length"), kept like one.
    cut = {**done, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    assert events.finished("responses", events=[*stream[:2],
                                               {"type": "response.incomplete", "response": cut}])
    assert not events.finished("responses", response={
        **cut, "incomplete_details": {"reason": "content_filter"}})
    assert events.take_usage("responses", None, stream[-1]) == done["usage"]
    assert events.is_last("responses", stream[-1]) and not events.is_last("responses", stream[0])
    assert events.is_error({"type": "error", "message": "x"})
