"""vLLM's binary pooling answer: `encoding_format` "bytes" or "bytes_only" on /v1/embeddings and
/pooling.

vLLM's server writes the vectors as raw bytes (`application/octet-stream`) and describes them in
a JSON `metadata` header: the answer's id, time and model, each vector's offsets, shape, dtype
and byte order, and the usage. "bytes_only" leaves the header out.

The lab always asks its engine for "bytes" (the usage in the header is what its token metrics
count) and keeps the answer as one JSON object, the metadata with the bytes in base64 under
`CONTENT`, so the cache, the metrics and the run store hold it as they hold any answer. The
HTTP layer writes it back as vLLM's server does: the bytes, with the header unless the client
asked for "bytes_only".
"""

from __future__ import annotations

import base64
import json
from typing import Any

from .request import OpenAIRequest

FORMATS = ("bytes", "bytes_only")
_ROUTES = ("embeddings", "pooling")
# The answer object's key for the bytes (base64); every other key is vLLM's metadata.
CONTENT = "content_base64"


def asks_binary(request: OpenAIRequest) -> bool:
    """The client asked for vLLM's binary answer."""
    return request.endpoint in _ROUTES and request.body.get("encoding_format") in FORMATS


def answer_of(metadata: str | None, content: bytes) -> dict[str, Any]:
    """The answer object of a binary answer: its metadata header (JSON) and its bytes;
    ValueError when the header is missing or not a JSON object."""
    described = json.loads(metadata or "null")
    if not isinstance(described, dict):
        raise ValueError("a binary pooling answer without its metadata header")
    return {**described, CONTENT: base64.b64encode(content).decode("ascii")}


def parts_of(answer: dict[str, Any], encoding_format: Any) -> tuple[bytes, dict[str, str]]:
    """The bytes and headers vLLM's server answers with for `encoding_format`."""
    metadata = {k: v for k, v in answer.items() if k != CONTENT}
    content = base64.b64decode(answer[CONTENT])
    # vLLM's server writes the header with json.dumps' defaults: the same text here.
    headers = {} if encoding_format == "bytes_only" else {"metadata": json.dumps(metadata)}
    return content, headers
