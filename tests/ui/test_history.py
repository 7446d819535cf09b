"""The tab's lab notebook: runs as rows, JSONL, and a run reopened into the playground."""

from __future__ import annotations

import json

from ui import history


def _run(number: int, request: dict, reply: object, mode: str = "Chat") -> dict:
    return history.entry(number=number, when=1_795_000_000.0 + number, mode=mode,
                         body={**request, "stream": True, "stream_options": {"include_usage": True}},
                         reply=reply, status="done", cache="MISS", prompt_tokens=30,
                         completion_tokens=12, seconds=0.6543, ttft=0.05)


CHAT = {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "Name   a\ncolour, please."}],
        "temperature": 0.7, "max_tokens": 32, "logprobs": True, "top_logprobs": 3,
        "response_format": {"type": "json_object"}}
COMPLETION = {"model": "m", "prompt": "Once upon a time " * 10, "temperature": 0.0, "n": 2}


def test_a_run_keeps_the_request_as_sent_without_the_transport() -> None:
    run = _run(1, CHAT, {"role": "assistant", "content": "Blue."})
    assert run["request"] == CHAT and run["seconds"] == 0.6543
    assert history.settings_of(run["request"]) == {
        "temperature": 0.7, "max_tokens": 32, "logprobs": True, "top_logprobs": 3,
        "response_format": {"type": "json_object"}}


def test_rows_newest_first_with_settings_and_first_words() -> None:
    runs = [_run(1, CHAT, {"role": "assistant", "content": "Blue."}),
            _run(2, COMPLETION, " there was", mode="Completion")]
    frame = history.frame(runs)
    assert list(frame.columns) == history.COLUMNS
    assert frame["#"].tolist() == [2, 1]
    chat = frame.iloc[1]
    assert chat["first words"] == "Name a colour, please."
    assert chat["settings"] == "temperature=0.7 max_tokens=32 logprobs json_object"
    assert chat["latency"] == "654 ms" and chat["tokens"] == 12
    completion = frame.iloc[0]
    assert completion["first words"].endswith("…") and len(completion["first words"]) == history.FIRST_WORDS
    assert history.frame([]).empty


def test_jsonl_is_one_run_per_line_oldest_first() -> None:
    runs = [_run(1, CHAT, {"role": "assistant", "content": "Blue."}), _run(2, COMPLETION, "x")]
    lines = history.jsonl(runs).splitlines()
    assert [json.loads(line)["number"] for line in lines] == [1, 2]
    assert history.jsonl([]) == ""


def test_the_notebook_keeps_the_latest_runs() -> None:
    runs: list = []
    for number in range(1, history.MAX_RUNS + 6):
        runs = history.added(runs, _run(number, COMPLETION, "x", mode="Completion"))
    assert len(runs) == history.MAX_RUNS and runs[0]["number"] == 6


def test_a_chat_run_reopens_as_its_conversation_with_the_reply() -> None:
    reply = {"role": "assistant", "content": "Blue."}
    opened = history.reopened(_run(1, CHAT, reply))
    assert opened["mode"] == "Chat" and opened["model"] == "m"
    assert opened["system"] == "Be brief."
    assert opened["turns"] == [CHAT["messages"][1], reply]
    assert opened["settings"]["top_logprobs"] == 3
    # A stopped run with nothing in its reply reopens as the question alone.
    empty = history.reopened(_run(2, CHAT, {"role": "assistant", "content": ""}))
    assert empty["turns"] == [CHAT["messages"][1]]


def test_a_completion_run_reopens_as_its_prompt_and_output() -> None:
    opened = history.reopened(_run(1, COMPLETION, " there was", mode="Completion"))
    assert opened["prompt"] == COMPLETION["prompt"] and opened["output"] == " there was"
    assert history.find([_run(1, COMPLETION, "x")], 1) is not None
    assert history.find([], 1) is None
