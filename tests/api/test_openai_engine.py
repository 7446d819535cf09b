"""The official `openai` client against a running lab with the real vLLM engine."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from typing import Any

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from tests.support.processes import LabServer
from textgen import DEFAULT_MODEL, Settings, embedded

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def client(lab: LabServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=lab.base_url + "/v1", api_key=lab.token, max_retries=0)


@pytest.fixture(scope="module")
def aclient(lab: LabServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=lab.base_url + "/v1", api_key=lab.token, max_retries=0)


@functools.cache
def default_model_tokenizer() -> Any:
    """The tokenizer of the lab's model folder, to count tokens as the engine does."""
    return AutoTokenizer.from_pretrained(embedded.prepare(DEFAULT_MODEL, Settings().MODEL_CACHE_DIR))


def fresh(prompt: str) -> str:
    """A prompt no earlier test (or run, on a shared Redis) has cached."""
    return f"[{uuid.uuid4().hex[:8]}] {prompt}"


def test_models_are_listed(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert DEFAULT_MODEL in ids and "mistralai/Mistral-7B-v0.1" in ids
    assert client.models.retrieve(DEFAULT_MODEL).id == DEFAULT_MODEL


def test_seed_example_generates_real_text(lab: LabServer) -> None:
    r = httpx.post(lab.base_url + "/v1/completions", headers=lab.headers, timeout=60, json={
        "model": DEFAULT_MODEL, "prompt": fresh("Escreva um poema sobre o mar"),
        "max_tokens": 32, "temperature": 0.7, "top_p": 0.95, "n": 1, "stream": False,
        "stop": ["\n\n"], "presence_penalty": 0.0, "frequency_penalty": 0.0,
    })
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    choice = body["choices"][0]
    assert choice["text"].strip() and choice["finish_reason"] in ("stop", "length")
    assert "\n\n" not in choice["text"]
    usage = body["usage"]
    assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= 32
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_max_tokens_gives_length_and_exact_counts(client: openai.OpenAI) -> None:
    r = client.completions.create(model=DEFAULT_MODEL, prompt=fresh("Once upon a time"),
                                  max_tokens=7, extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7


def test_usage_counts_are_the_tokenizers(client: openai.OpenAI) -> None:
    tokenizer = default_model_tokenizer()
    prompt = fresh("Count the tokens of this prompt, please.")
    r = client.completions.create(model=DEFAULT_MODEL, prompt=prompt, max_tokens=3)
    assert r.usage.prompt_tokens == len(tokenizer.encode(prompt))


def test_stop_sequence_stops(client: openai.OpenAI) -> None:
    r = client.completions.create(model=DEFAULT_MODEL, prompt=fresh("1, 2, 3, 4, 5,"),
                                  max_tokens=30, temperature=0, stop=[","])
    assert r.choices[0].finish_reason == "stop" and "," not in r.choices[0].text


def test_n_and_prompt_lists_give_indexed_choices(client: openai.OpenAI) -> None:
    r = client.completions.create(model=DEFAULT_MODEL, prompt=[fresh("Red"), fresh("Blue")],
                                  n=2, max_tokens=5, temperature=1.0, seed=3)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    assert 4 <= r.usage.completion_tokens <= 20  # four choices of 1 to 5 tokens each


def test_token_id_prompts_are_accepted(client: openai.OpenAI) -> None:
    r = client.completions.create(model=DEFAULT_MODEL, prompt=[504, 3145, 314], max_tokens=4)
    assert r.usage.prompt_tokens == 3


def test_seed_makes_sampling_reproducible(client: openai.OpenAI) -> None:
    prompt = fresh("The weather today is")
    kwargs = dict(model=DEFAULT_MODEL, prompt=prompt, max_tokens=12, temperature=1.0, seed=42)
    a = client.completions.create(**kwargs, extra_headers={"Cache-Control": "no-cache"})
    b = client.completions.create(**kwargs, extra_headers={"Cache-Control": "no-cache"})
    assert a.choices[0].text == b.choices[0].text


def test_logprobs_and_echo(client: openai.OpenAI) -> None:
    prompt = fresh("The capital of France is")
    r = client.completions.create(model=DEFAULT_MODEL, prompt=prompt, max_tokens=4, logprobs=2,
                                  echo=True, temperature=0)
    choice = r.choices[0]
    assert choice.text.startswith(prompt)
    lp = choice.logprobs
    # The prompt's tokens and the 4 generated ones, as scoring harnesses need them; the first
    # token has no logprob (nothing comes before it).
    count = r.usage.prompt_tokens + 4
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == count
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v <= 0 for v in lp.token_logprobs[1:])
    assert all(1 <= len(t) <= 3 for t in lp.top_logprobs[1:])


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.completions.create(model=DEFAULT_MODEL, prompt=fresh("Tell me a story"),
                                       max_tokens=20, stream=True,
                                       stream_options={"include_usage": True},
                                       extra_body={"ignore_eos": True})
    chunks = list(stream)
    text_chunks = [c for c in chunks if c.choices]
    assert len(text_chunks) >= 5
    assert text_chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20
    assert len({c.id for c in chunks}) == 1


def test_stream_ends_with_done(lab: LabServer) -> None:
    with httpx.stream("POST", lab.base_url + "/v1/completions", headers=lab.headers, timeout=60,
                      json={"model": DEFAULT_MODEL, "prompt": fresh("Hi"), "max_tokens": 5,
                            "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_chat_completion_uses_the_chat_template(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": fresh("What is the capital of France?")}]
    r = client.chat.completions.create(model=DEFAULT_MODEL, max_tokens=24, temperature=0,
                                       messages=messages)  # type: ignore[arg-type]
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    # The engine saw the model's own template around the messages, generation prompt included
    # (the answer's wording is the model's business: the cache-busting tag changes it).
    tokenizer = default_model_tokenizer()
    templated = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert templated.endswith("<|im_start|>assistant\n")
    assert r.usage.prompt_tokens == len(tokenizer(templated, add_special_tokens=False).input_ids)
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL, max_tokens=8, stream=True,
        messages=[{"role": "user", "content": fresh("Say hello")}])
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_errors_reach_the_client_typed(client: openai.OpenAI, lab: LabServer) -> None:
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no/such-model", prompt="x")
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=DEFAULT_MODEL, prompt="x " * 3000, max_tokens=5)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=DEFAULT_MODEL, prompt="x", max_tokens=5000)
    bad = openai.OpenAI(base_url=lab.base_url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model=DEFAULT_MODEL, prompt="x")
    second = openai.OpenAI(base_url=lab.base_url + "/v1", api_key="second-token", max_retries=0)
    assert second.completions.create(model=DEFAULT_MODEL, prompt=fresh("x"), max_tokens=2).choices


async def test_two_requests_are_batched_not_queued(aclient: openai.AsyncOpenAI) -> None:
    """While a long generation streams, a short one starts and finishes beside it."""
    long_stream = await aclient.completions.create(
        model=DEFAULT_MODEL, prompt=fresh("Write a long essay"), max_tokens=300, stream=True,
        extra_body={"ignore_eos": True}, extra_headers={"Cache-Control": "no-store"})
    long_chunks = 0
    iterator = long_stream.__aiter__()
    await anext(iterator)  # the long one is running
    short = asyncio.create_task(aclient.completions.create(
        model=DEFAULT_MODEL, prompt=fresh("Hi"), max_tokens=5, extra_body={"ignore_eos": True}))
    long_finished = False
    async for chunk in iterator:
        long_chunks += 1
        if short.done():
            break
        if chunk.choices and chunk.choices[0].finish_reason:
            long_finished = True
    assert not long_finished, "the short request waited for the long one to finish"
    assert (await short).usage.completion_tokens == 5
    await long_stream.close()


def test_client_disconnect_aborts_the_generation(lab: LabServer) -> None:
    metrics_url = f"http://127.0.0.1:{lab.metrics_port}/metrics"

    def in_flight() -> float:
        for line in httpx.get(metrics_url).text.splitlines():
            if line.startswith("text_generation_requests_in_flight{") and DEFAULT_MODEL in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    prompt = fresh("An endless story")
    with httpx.stream("POST", lab.base_url + "/v1/completions", headers=lab.headers, timeout=60,
                      json={"model": DEFAULT_MODEL, "prompt": prompt, "max_tokens": 1500,
                            "stream": True, "ignore_eos": True}) as r:
        lines = r.iter_lines()
        next(lines)
        assert in_flight() >= 1
    # The stream is closed after one chunk: the engine must drop the request within moments,
    # not run all 1500 tokens, and nothing partial is cached.
    for _ in range(50):
        if in_flight() == 0:
            break
        time.sleep(0.1)
    assert in_flight() == 0
    with httpx.stream("POST", lab.base_url + "/v1/completions", headers=lab.headers, timeout=60,
                      json={"model": DEFAULT_MODEL, "prompt": prompt, "max_tokens": 1500,
                            "stream": True, "ignore_eos": True}) as r:
        assert r.headers["X-Cache"] == "MISS"
