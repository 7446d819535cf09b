"""The one JSON codec of the lab: orjson, with the standard library where orjson refuses.

orjson is several times faster than `json` on the bodies the lab reads and writes (a chat
request, an answer, a stream chunk), but it refuses integers past 64 bits, which an upstream
server or a client may send; those values go through the slower `json` module instead of
failing the request.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson

# JSON work on a body past this size runs off the event loop, so one huge request never holds
# up the others (a 4 MB prompt takes milliseconds to parse or hash).
OFF_LOOP_BYTES = 256 * 1024

JSONDecodeError = orjson.JSONDecodeError  # a subclass of json.JSONDecodeError


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """Compact JSON bytes of `value` (keys sorted when asked: a canonical form)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:  # an integer past 64 bits
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":")).encode()


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)


async def loads_off_loop(raw: bytes) -> Any:
    """`loads`, in a worker thread when `raw` is past OFF_LOOP_BYTES."""
    return loads(raw) if len(raw) < OFF_LOOP_BYTES else await asyncio.to_thread(loads, raw)
