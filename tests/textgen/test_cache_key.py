"""The cache key covers every output-affecting field, and nothing else."""

from __future__ import annotations

import dataclasses

import pytest

from api.protocol import CompletionRequest
from textgen.cache import KEY_PREFIX, cache_key
from textgen.types import ChatMessage, GenerationRequest, SamplingOptions

BASE = GenerationRequest(model="m", prompts=("Escreva um poema sobre",), options=SamplingOptions())

# A changed value for every field of SamplingOptions: adding a field without listing it here
# fails test_every_option_is_covered.
CHANGED = {
    "max_tokens": 17, "temperature": 0.5, "top_p": 0.9, "n": 2, "stop": ("\n\n",),
    "presence_penalty": 0.1, "frequency_penalty": 0.1, "seed": 7, "logprobs": 1, "echo": True,
    "logit_bias": ((5, 1.0),), "top_k": 5, "min_p": 0.1, "repetition_penalty": 1.1,
    "min_tokens": 2, "ignore_eos": True, "stop_token_ids": (2,),
}


def test_every_option_is_covered() -> None:
    assert set(CHANGED) == {f.name for f in dataclasses.fields(SamplingOptions)}


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_changing_any_sampling_option_changes_the_key(field: str) -> None:
    changed = dataclasses.replace(BASE, options=dataclasses.replace(BASE.options, **{field: CHANGED[field]}))
    assert cache_key(changed) != cache_key(BASE)


def test_model_prompt_and_messages_change_the_key() -> None:
    keys = {
        cache_key(BASE),
        cache_key(dataclasses.replace(BASE, model="other")),
        cache_key(dataclasses.replace(BASE, prompts=("Escreva um poema sobre o mar",))),
        cache_key(dataclasses.replace(BASE, prompts=("a", "b"))),
        cache_key(dataclasses.replace(BASE, prompts=([1, 2, 3],))),
        cache_key(dataclasses.replace(BASE, prompts=(), messages=(ChatMessage("user", "hi"),))),
        cache_key(dataclasses.replace(BASE, prompts=(), messages=(ChatMessage("system", "hi"),))),
    }
    assert len(keys) == 7


def test_key_is_prefixed_and_stable() -> None:
    key = cache_key(BASE)
    assert key.startswith(KEY_PREFIX) and key == cache_key(dataclasses.replace(BASE))
    assert len(key) == len(KEY_PREFIX) + 64


def _key(**body: object) -> str:
    request = CompletionRequest.model_validate({"model": "m", "prompt": "p", **body})
    return cache_key(request.to_generation_request(read_cache=True, write_cache=True))


def test_stream_and_user_do_not_change_the_key() -> None:
    plain = _key()
    assert _key(stream=True) == plain
    assert _key(stream=True, stream_options={"include_usage": True}) == plain
    assert _key(user="alice") == plain


def test_defaults_spelled_out_share_the_key() -> None:
    assert _key() == _key(max_tokens=16, temperature=1.0, top_p=1.0, n=1, stop=None)
    assert _key(stop="x") == _key(stop=["x"])


def test_cache_control_does_not_change_the_key() -> None:
    request = CompletionRequest.model_validate({"model": "m", "prompt": "p"})
    assert cache_key(request.to_generation_request(read_cache=False, write_cache=False)) == _key()
