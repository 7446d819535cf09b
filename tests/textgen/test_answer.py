"""An answer's two forms: chunks merged into a response, a response split into chunks.

The chunk shapes are vLLM's own (copied from its server's output on SmolLM2); the real engine's
streamed and plain answers are compared through these functions in tests/api/test_protocol.py.
"""

from __future__ import annotations

import copy
from typing import Any

from textgen import Answer
from textgen.answer import is_usage_chunk, merge_chunks, split_response, token_counts, usage_of

HEAD = {"id": "cmpl-9", "object": "text_completion", "created": 7, "model": "m"}
USAGE = {"prompt_tokens": 4, "total_tokens": 7, "completion_tokens": 3}


def completion_chunk(index: int, text: str, finish: str | None = None,
                     logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**HEAD, "choices": [{"index": index, "text": text, "logprobs": logprobs,
                                 "finish_reason": finish, "stop_reason": None}]}


def chat_chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 7, "model": "m",
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def test_completion_chunks_merge_text_logprobs_and_choices() -> None:
    lp = lambda tok, off: {"tokens": [tok], "token_logprobs": [-0.5], "top_logprobs": [{tok: -0.5}],  # noqa: E731
                           "text_offset": [off]}
    chunks = [
        completion_chunk(0, "Hel", logprobs=lp("Hel", 0)),
        completion_chunk(1, "Bye", logprobs=lp("Bye", 0)),
        completion_chunk(0, "lo", "length", logprobs=lp("lo", 3)),
        completion_chunk(1, "!", "stop", logprobs=lp("!", 3)),
        {**HEAD, "choices": [], "usage": USAGE, "system_fingerprint": "fp"},
    ]
    response = merge_chunks("completions", chunks)
    assert response["object"] == "text_completion" and response["id"] == "cmpl-9"
    assert response["usage"] == USAGE and response["system_fingerprint"] == "fp"
    first, second = response["choices"]
    assert (first["index"], first["text"], first["finish_reason"]) == (0, "Hello", "length")
    assert (second["text"], second["finish_reason"]) == ("Bye!", "stop")
    assert first["logprobs"] == {"tokens": ["Hel", "lo"], "token_logprobs": [-0.5, -0.5],
                                 "top_logprobs": [{"Hel": -0.5}, {"lo": -0.5}], "text_offset": [0, 3]}


def test_chat_chunks_merge_into_a_message_with_tool_calls() -> None:
    chunks = [
        chat_chunk({"role": "assistant", "content": ""}),
        chat_chunk({"tool_calls": [{"index": 0, "id": "call-1", "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""}}]}),
        chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chat_chunk({}, "tool_calls"),
        {**chat_chunk({}), "choices": [], "usage": USAGE},
    ]
    response = merge_chunks("chat", chunks)
    assert response["object"] == "chat.completion"
    choice = response["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and "delta" not in choice
    message = choice["message"]
    assert message["role"] == "assistant" and message["content"] == ""
    assert message["tool_calls"] == [{"id": "call-1", "type": "function",
                                      "function": {"name": "get_weather",
                                                   "arguments": '{"city": "Paris"}'}}]


def test_merging_does_not_change_the_chunks() -> None:
    chunks = [chat_chunk({"role": "assistant", "content": "Hi"}), chat_chunk({"content": "!"}, "stop")]
    before = copy.deepcopy(chunks)
    merge_chunks("chat", chunks)
    assert chunks == before


def test_a_response_split_into_chunks_merges_back_to_itself() -> None:
    response = {
        "id": "chatcmpl-9", "object": "chat.completion", "created": 7, "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello",
                                     "tool_calls": [{"id": "c", "type": "function",
                                                     "function": {"name": "f", "arguments": "{}"}}]},
             "logprobs": None, "finish_reason": "tool_calls"},
            {"index": 1, "message": {"role": "assistant", "content": "Bye"}, "logprobs": None,
             "finish_reason": "stop"},
        ],
        "usage": USAGE,
    }
    chunks = split_response("chat", response)
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 3
    assert is_usage_chunk(chunks[-1]) and chunks[-1]["usage"] == USAGE
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert merge_chunks("chat", chunks) == response


def test_completion_response_round_trip() -> None:
    response = {**HEAD, "choices": [{"index": 0, "text": "o mar", "logprobs": None,
                                     "finish_reason": "stop"}], "usage": USAGE}
    assert merge_chunks("completions", split_response("completions", response)) == response


def test_answer_gives_either_form_without_sharing_state() -> None:
    chunks = [completion_chunk(0, "a"), completion_chunk(0, "b", "stop"),
              {**HEAD, "choices": [], "usage": USAGE}]
    answer = Answer("completions", "chunks", chunks)
    assert answer.response()["choices"][0]["text"] == "ab"
    replayed = answer.chunks()
    replayed[0]["choices"][0]["text"] = "changed"
    assert answer.chunks()[0]["choices"][0]["text"] == "a"


def test_a_pooling_answer_gets_a_new_id_and_keeps_its_shape() -> None:
    from textgen.answer import new_id, renamed

    embedding = {"id": "embd-1", "object": "list", "created": 7, "model": "m",
                 "data": [{"index": 0, "object": "embedding", "embedding": [0.5]}],
                 "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    rerank = {"id": "score-1", "model": "m", "results": [], "usage": {"total_tokens": 3}}
    assert renamed(embedding, new_id("embeddings", "r2"), 9) == {
        **embedding, "id": "embd-r2", "created": 9}
    # vLLM's rerank answer has no time: none is made up for it.
    assert renamed(rerank, new_id("rerank", "r3"), 9) == {**rerank, "id": "score-r3"}


def test_a_pooling_request_is_never_streamed_nor_sampled() -> None:
    from textgen import OpenAIRequest

    request = OpenAIRequest("embeddings", {"model": "m", "input": "x", "stream": True})
    assert (request.pooled, request.stream, request.sampled, request.path) == (
        True, False, False, "/v1/embeddings")
    chat = OpenAIRequest("chat", {"model": "m", "messages": []})
    assert (chat.pooled, chat.sampled) == (False, True)


def test_typed_events_are_renamed_where_they_hold_the_answers_id() -> None:
    from textgen.answer import renamed

    created = {"type": "response.created", "response": {"id": "resp_1", "created_at": 7}}
    delta = {"type": "response.output_text.delta", "delta": "Hi", "item_id": "msg_9"}
    start = {"type": "message_start", "message": {"id": "msg_1", "content": []}}
    assert renamed(created, "resp_2", 9) == {**created, "response": {"id": "resp_2", "created_at": 7}}
    assert renamed(delta, "resp_2", 9) == delta
    assert renamed(start, "msg_2", 9)["message"]["id"] == "msg_2"


def test_billed_text_and_image_tokens_are_prompt_tokens() -> None:
    # Cohere's embed answer has no usage; the real engine's is counted in test_pooling.py.
    assert token_counts(usage_of({"meta": {"billed_units": {"input_tokens": 7}}})) == (7, 0)
    # vLLM bills a request with any image all as image tokens.
    billed = {"input_tokens": 0, "image_tokens": 5}
    assert token_counts(usage_of({"meta": {"billed_units": billed}})) == (5, 0)
    assert usage_of({"meta": {}}) is None and usage_of({"meta": "x"}) is None
