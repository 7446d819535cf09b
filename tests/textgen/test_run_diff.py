"""Two kept runs side by side (textgen.runs.diff), and a run sent again (TextGen.rerun) on a
fake engine. On the real engine, over the API: tests/api/test_runs.py."""

from __future__ import annotations

from pathlib import Path

from tests.support.fake_engines import FakeStarter
from textgen import OpenAIRequest, Settings, TextGen
from textgen.runs import RunRecord, diff


def run(request: dict, text: str, logprob_tokens: list[str] | None = None,
        model: str = "m") -> RunRecord:
    choice: dict = {"index": 0, "text": text}
    if logprob_tokens is not None:
        choice["logprobs"] = {"tokens": logprob_tokens, "token_logprobs": [0.0] * len(logprob_tokens)}
    return RunRecord(model=model, route="completions", mode="api", status="ok", cache="MISS",
                     request={"model": model, **request}, seconds=1.0, created=1.0,
                     answer={"choices": [choice]})


def test_the_settings_that_differ_the_model_first_and_one_left_out_as_none() -> None:
    a = run({"prompt": "Hi", "temperature": 0, "max_tokens": 8}, "x")
    b = run({"prompt": "Hi", "temperature": 0.7, "seed": 3, "max_tokens": 8}, "x", model="n")
    d = diff(a, b)
    assert d.settings == [("model", "m", "n"), ("seed", None, 3), ("temperature", 0, 0.7)]
    assert d.same_input and d.same_output


def test_a_different_input_is_said() -> None:
    assert not diff(run({"prompt": "Hi"}, "x"), run({"prompt": "Ho"}, "x")).same_input


def test_outputs_differ_word_by_word_without_logprobs() -> None:
    d = diff(run({"prompt": "p"}, "The sea is blue."), run({"prompt": "p"}, "The sea is green!"))
    changed = [(c.op, c.a, c.b) for c in d.output if c.op != "equal"]
    assert changed == [("replace", "blue.", "green!")]
    assert "".join(c.a for c in d.output) == "The sea is blue."
    assert "".join(c.b for c in d.output) == "The sea is green!"


def test_outputs_differ_token_by_token_when_the_runs_kept_their_logprobs() -> None:
    a = run({"prompt": "p"}, "Hello world", ["Hel", "lo", " world"])
    b = run({"prompt": "p"}, "Hello there", ["Hel", "lo", " there"])
    assert [(c.op, c.a, c.b) for c in diff(a, b).output] == [
        ("equal", "Hello", "Hello"), ("replace", " world", " there")]
    # Tokens that do not make up the text (a cut run): words instead.
    broken = run({"prompt": "p"}, "Hello world", ["Hel"])
    assert [c.op for c in diff(broken, broken).output] == ["equal"]


def test_to_json_is_what_the_api_answers() -> None:
    body = diff(run({"prompt": "p", "n": 1}, "a b"), run({"prompt": "p", "n": 2}, "a c")).to_json()
    assert body["object"] == "run.diff" and body["same_input"] and not body["same_output"]
    assert body["settings"] == [{"field": "n", "a": 1, "b": 2}]


async def test_a_rerun_is_the_same_request_fresh_and_kept_as_a_new_run(tmp_path: Path) -> None:
    starter = FakeStarter()
    tg = TextGen(Settings(MODEL="local/fake", MODEL_PATHS={"local/fake": tmp_path},
                          VLLM_ENDPOINT="", METRICS_PORT=0, LAB_DATA_DIR=tmp_path),
                 engine_starter=starter.start)
    await tg.start()
    try:
        body = {"model": "local/fake", "prompt": "a", "max_tokens": 4, "temperature": 0}
        await tg.complete(OpenAIRequest("completions", body, record="api"))
        await tg.runs.flush()
        [first] = await tg.runs.runs()
        again = await tg.rerun(first.id)
        assert again.id != first.id and again.mode == "rerun" and again.status == "ok"
        assert again.request == first.request and again.text == first.text
        assert again.cache != "HIT"  # fresh: the engine answered again
        assert [b["prompt"] for b in starter.engines[0].requests] == ["a", "a"]
        assert len(await tg.runs.runs()) == 2
    finally:
        await tg.close()
