"""Property tests of the event-stream plumbing: what the lab writes, the lab reads back.

The API writes OpenAI's server-sent events (api/http.py); the remote engine reads a vLLM
server's (textgen/engines/sse.py). For any chunks, cut into any pieces on the wire (TCP
gives no event boundaries), reading what was written gives back the same chunks, then [DONE].
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from api.http import _DONE, _sse
from textgen.engines.sse import sse_data

text = st.text(max_size=20)  # any character but lone surrogates (not valid UTF-8)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
chunks = st.lists(st.dictionaries(text, values, max_size=4), max_size=6)


class _Wire:
    """A response whose body arrives in the given pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.stream = _pieces(pieces)


async def _pieces(pieces: list[bytes]) -> Any:
    for piece in pieces:
        yield piece


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({min(p, len(data)) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@settings(max_examples=300, deadline=None)
@given(chunks=chunks, points=st.lists(st.integers(0, 4000), max_size=12), crlf=st.booleans())
def test_written_events_read_back_whatever_the_pieces(chunks: list[dict[str, Any]],
                                                      points: list[int], crlf: bool) -> None:
    wire = b"".join(_sse(chunk) for chunk in chunks) + _DONE
    if crlf:  # some servers end their lines with \r\n
        wire = wire.replace(b"\n", b"\r\n")

    async def read() -> list[bytes]:
        return [data async for data in sse_data(_Wire(cut(wire, points)))]  # type: ignore[arg-type]

    read_back = asyncio.run(read())
    assert read_back[-1] == b"[DONE]"
    assert [orjson.loads(data) for data in read_back[:-1]] == chunks


@given(chunk=st.dictionaries(text, values, max_size=4))
def test_an_event_is_one_data_line(chunk: dict[str, Any]) -> None:
    event = _sse(chunk)
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert event.count(b"\n") == 2  # JSON escapes every newline: one line, whatever the text
