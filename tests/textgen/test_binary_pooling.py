"""vLLM's binary pooling answer kept as an answer object and written back as vLLM writes it."""

from __future__ import annotations

import json

import pytest

from textgen import OpenAIRequest, binary_pooling

METADATA = {"id": "embd-1", "created": 1, "model": "m",
            "data": [{"index": 0, "embed_dtype": "float32", "endianness": "native",
                      "start": 0, "end": 8, "shape": [2]}],
            "usage": {"prompt_tokens": 3, "total_tokens": 3}}
CONTENT = bytes(range(8))


@pytest.mark.parametrize(("route", "encoding", "binary"), [
    ("embeddings", "bytes", True), ("pooling", "bytes_only", True),
    ("embeddings", "base64", False), ("embeddings", None, False),
    ("score", "bytes", False),  # only embeddings and pooling have a binary answer
])
def test_which_requests_ask_for_bytes(route: str, encoding: str | None, binary: bool) -> None:
    body = {"model": "m", "input": "x", **({"encoding_format": encoding} if encoding else {})}
    assert binary_pooling.asks_binary(OpenAIRequest(route, body)) is binary  # type: ignore[arg-type]


def test_the_answer_object_holds_the_metadata_and_gives_back_the_same_bytes() -> None:
    header = json.dumps(METADATA)
    answer = binary_pooling.answer_of(header, CONTENT)
    assert answer["usage"] == METADATA["usage"]  # what the token metrics read
    content, headers = binary_pooling.parts_of(json.loads(json.dumps(answer)), "bytes")
    assert content == CONTENT and headers == {"metadata": header}  # vLLM's very text
    assert binary_pooling.parts_of(answer, "bytes_only") == (CONTENT, {})


@pytest.mark.parametrize("header", [None, "", "[1]", "not json"])
def test_an_answer_without_its_metadata_is_refused(header: str | None) -> None:
    with pytest.raises(ValueError):
        binary_pooling.answer_of(header, CONTENT)
