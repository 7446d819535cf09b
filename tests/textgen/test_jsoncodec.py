"""The one JSON codec: orjson's output, and the standard library's where orjson refuses."""

from __future__ import annotations

import json

from textgen import jsoncodec


def test_compact_and_canonical() -> None:
    assert jsoncodec.dumps({"b": 1, "a": "é"}) == '{"b":1,"a":"é"}'.encode()
    assert jsoncodec.dumps({"b": 1, "a": [2, 3]}, sort_keys=True) == b'{"a":[2,3],"b":1}'


def test_an_integer_past_64_bits_is_written_not_refused() -> None:
    huge = {"seed": 2**70, "z": 0, "a": 1}
    assert json.loads(jsoncodec.dumps(huge)) == huge
    assert jsoncodec.dumps(huge, sort_keys=True) == f'{{"a":1,"seed":{2**70},"z":0}}'.encode()


async def test_a_large_body_parses_the_same_off_the_loop() -> None:
    body = {"prompt": "x" * (jsoncodec.OFF_LOOP_BYTES + 1)}
    raw = jsoncodec.dumps(body)
    assert len(raw) > jsoncodec.OFF_LOOP_BYTES
    assert await jsoncodec.loads_off_loop(raw) == body
    assert await jsoncodec.loads_off_loop(b'{"a": 1}') == {"a": 1}
