"""History's rows, JSONL and reopening, from kept runs (textgen.runs.RunRecord)."""

from __future__ import annotations

import json
from typing import Any

from textgen.runs import RunRecord
from ui import history


def _run(n: int, request: dict[str, Any], answer: dict[str, Any], route: str = "chat",
         mode: str = "playground") -> RunRecord:
    return RunRecord(model="m", route=route, mode=mode, status="ok", cache="MISS",
                     request={**request, "stream": True, "stream_options": {"include_usage": True}},
                     answer=answer, seconds=0.6543, created=1_795_000_000.0 + n, prompt_tokens=30,
                     completion_tokens=12, ttft=0.05)


CHAT = {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "Name   a\ncolour, please."}],
        "temperature": 0.7, "max_tokens": 32, "logprobs": True, "top_logprobs": 3,
        "response_format": {"type": "json_object"}}
COMPLETION = {"model": "m", "prompt": "Once upon a time " * 10, "temperature": 0.0, "n": 2}


def chat_answer(content: str) -> dict[str, Any]:
    # vLLM's message has null fields beside the content.
    return {"object": "chat.completion", "choices": [{"index": 0, "message": {
        "role": "assistant", "content": content, "refusal": None, "tool_calls": [],
        "reasoning_content": None}, "finish_reason": "stop"}]}


def completion_answer(text: str) -> dict[str, Any]:
    return {"object": "text_completion", "choices": [{"index": 0, "text": text}]}


def test_settings_are_the_body_less_input_and_transport() -> None:
    run = _run(1, CHAT, chat_answer("Blue."))
    assert history.settings_of(run.request) == {
        "temperature": 0.7, "max_tokens": 32, "logprobs": True, "top_logprobs": 3,
        "response_format": {"type": "json_object"}}


def test_rows_in_the_stores_order_with_settings_and_first_words() -> None:
    runs = [_run(2, COMPLETION, completion_answer(" there was"), route="completions"),
            _run(1, CHAT, chat_answer("Blue."))]
    frame = history.frame(runs)
    assert list(frame.columns) == history.COLUMNS
    assert frame["id"].tolist() == [runs[0].id[:8], runs[1].id[:8]]
    chat = frame.iloc[1]
    assert chat["first words"] == "Name a colour, please."
    assert chat["settings"] == "temperature=0.7 max_tokens=32 logprobs json_object"
    assert chat["latency"] == "654 ms" and chat["tokens"] == 12 and chat["mode"] == "playground"
    completion = frame.iloc[0]
    assert completion["first words"].endswith("…") and len(completion["first words"]) == history.FIRST_WORDS
    assert history.frame([]).empty


def test_a_failed_run_shows_its_error() -> None:
    run = RunRecord(model="m", route="chat", mode="api", status="rate_limit_exceeded",
                    cache="BYPASS", request=CHAT, seconds=0.001, created=1.0,
                    error="Rate limit reached")
    assert history.frame([run]).iloc[0]["status"] == "rate_limit_exceeded: Rate limit reached"


def test_jsonl_is_one_whole_run_per_line() -> None:
    runs = [_run(2, CHAT, chat_answer("Blue.")), _run(1, COMPLETION, completion_answer("x"),
                                                      route="completions")]
    lines = [json.loads(line) for line in history.jsonl(runs).splitlines()]
    assert [line["id"] for line in lines] == [r.id for r in runs]
    assert lines[0]["answer"]["choices"][0]["message"]["content"] == "Blue."
    assert history.jsonl([]) == ""


def test_a_chat_run_reopens_as_its_conversation_with_the_reply() -> None:
    opened = history.reopened(_run(1, CHAT, chat_answer("Blue.")))
    assert opened["mode"] == "Chat" and opened["model"] == "m"
    assert opened["system"] == "Be brief."
    assert opened["turns"] == [CHAT["messages"][1], {"role": "assistant", "content": "Blue."}]
    assert opened["settings"]["top_logprobs"] == 3
    # A stopped run with nothing in its reply reopens as the question alone.
    assert history.reopened(_run(2, CHAT, chat_answer("")))["turns"] == [CHAT["messages"][1]]
    # So does a refused one, which has no answer at all.
    refused = RunRecord(model="m", route="chat", mode="api", status="model_not_ready",
                        cache="BYPASS", request=CHAT, seconds=0.0, created=1.0)
    assert history.reopened(refused)["turns"] == [CHAT["messages"][1]]


def test_a_completion_run_reopens_as_its_prompt_and_output() -> None:
    opened = history.reopened(_run(1, COMPLETION, completion_answer(" there was"),
                                   route="completions"))
    assert opened["mode"] == "Completion"
    assert opened["prompt"] == COMPLETION["prompt"] and opened["output"] == " there was"


def test_a_diff_shows_the_settings_that_differ_and_marks_each_runs_own_words() -> None:
    from textgen.runs import diff

    a = _run(1, {**COMPLETION, "temperature": 0.0}, {"choices": [{"text": "The sea is <blue>"}]},
             route="completions")
    b = _run(2, {**COMPLETION, "temperature": 0.5}, {"choices": [{"text": "The sea is green"}]},
             route="completions")
    shown = history.diff_html(diff(a, b))
    assert "<code>temperature</code></td><td>0.0</td><td>0.5</td>" in shown
    assert "Same input." in shown
    assert '<del class="diff-a">&lt;blue&gt;</del><ins class="diff-b">green</ins>' in shown
    assert "The outputs are the same." in history.diff_html(diff(a, a))
    assert "Same model and settings." in history.diff_html(diff(a, a))


def test_the_pickers_name_a_run_by_id_time_model_and_first_words() -> None:
    label = history.choice_label(_run(1, COMPLETION, {"choices": [{"text": "x"}]},
                                      route="completions"))
    assert label.split(" · ")[2:] == ["m", history.first_words(COMPLETION)]
