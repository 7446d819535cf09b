"""The cache key is the whole canonical body, minus a documented list of fields.

Properties, by hypothesis: equal requests have equal keys whatever the order of their fields;
any change to a field outside IGNORED_FIELDS, a field the lab has never heard of included,
changes the key.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from textgen import OpenAIRequest
from textgen.cache import IGNORED_FIELDS, KEY_PREFIX, cache_key

BASE: dict[str, Any] = {"model": "m", "prompt": "Escreva um poema sobre", "max_tokens": 16}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)
field_names = st.text(min_size=1, max_size=12).filter(lambda k: k not in IGNORED_FIELDS and k != "model")


def key(body: dict[str, Any], endpoint: str = "completions", weights: str = "w") -> str:
    return cache_key(OpenAIRequest(endpoint, body), weights)  # type: ignore[arg-type]


def test_key_is_prefixed_and_stable() -> None:
    k = key(BASE)
    assert k.startswith(KEY_PREFIX) and len(k) == len(KEY_PREFIX) + 64
    assert k == key(dict(BASE))


@given(st.dictionaries(field_names, json_values, max_size=5), st.randoms())
def test_field_order_does_not_matter(extra: dict[str, Any], rnd: Any) -> None:
    body = {**BASE, **extra}
    items = list(body.items())
    rnd.shuffle(items)
    assert key(dict(items)) == key(body)


@given(field_names, json_values, json_values)
def test_any_field_change_changes_the_key(name: str, a: Any, b: Any) -> None:
    # Two values are the same request when they serialise the same (1 and 1.0 do not).
    if json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True):
        return
    assert key({**BASE, name: a}) != key({**BASE, name: b})


@given(field_names, json_values)
def test_adding_an_unknown_field_changes_the_key(name: str, value: Any) -> None:
    if name in BASE:
        return
    assert key({**BASE, name: value}) != key(BASE)


@pytest.mark.parametrize("changes", [
    {"response_format": {"type": "json_object"}},
    {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
    {"tool_choice": "required"},
    {"logprobs": 1}, {"echo": True}, {"max_tokens": 17}, {"temperature": 0.5}, {"seed": 1},
    {"prompt": "Escreva um poema sobre o mar"}, {"prompt": [1, 2, 3]},
    {"model": "other"}, {"a_field_from_the_future": 1},
])
def test_output_affecting_fields_change_the_key(changes: dict[str, Any]) -> None:
    assert key({**BASE, **changes}) != key(BASE)


def test_endpoint_and_weights_change_the_key() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert key(chat, "chat") != key(chat, "completions")
    assert key(BASE, weights="folder-a") != key(BASE, weights="folder-b")


@pytest.mark.parametrize("changes", [
    {"stream": True}, {"stream": True, "stream_options": {"include_usage": True}},
    {"user": "alice"}, {"priority": 3}, {"request_id": "abc"},
])
def test_ignored_fields_do_not_change_the_key(changes: dict[str, Any]) -> None:
    assert set(changes) <= IGNORED_FIELDS
    assert key({**BASE, **changes}) == key(BASE)


def test_cache_control_does_not_change_the_key() -> None:
    plain = cache_key(OpenAIRequest("completions", BASE), "w")
    assert cache_key(OpenAIRequest("completions", BASE, read_cache=False, write_cache=False), "w") == plain


def test_integers_past_64_bits_still_make_a_key() -> None:
    assert key({**BASE, "seed": 2**70}) != key({**BASE, "seed": 2**70 + 1})
