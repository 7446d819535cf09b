"""An OpenAI answer in its two forms: one response object, or the chunks of a stream.

The engines produce the form the client asked for, by vLLM's own code (in-process) or the
upstream's (remote). The cache and single flight keep whichever form was generated and serve
the other form from it when a request of the other kind asks for the same thing:

- chunks -> response: the chunks' choices merged by index (strings concatenated, lists
  extended, tool calls merged by their index, the last value of everything else), `delta`
  becoming `message`; what OpenAI's own clients do to rebuild a streamed answer.
- response -> chunks: one chunk per choice holding its whole message, then the usage chunk.

Both are documented in docs/cache-limits-metrics.md; the live answer is always the engine's own.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Literal

from . import events
from .request import EVENT_ROUTES, Route

Form = Literal["response", "chunks"]
# Finish reasons of a generation that ended on its own: only such answers are cached.
FINISHED = frozenset({"stop", "length", "tool_calls", "function_call", "content_filter"})
_OBJECT = {
    ("completions", "response"): "text_completion",
    ("completions", "chunks"): "text_completion",
    ("chat", "response"): "chat.completion",
    ("chat", "chunks"): "chat.completion.chunk",
}


@dataclass(slots=True)
class Answer:
    """A finished answer as it is cached: its form and its data (a dict, or a list of chunks)."""

    endpoint: Route
    form: Form
    data: Any

    def response(self) -> dict[str, Any]:
        """The answer as one response object (merged from the chunks if it was streamed)."""
        if self.form == "response":
            return copy.deepcopy(self.data)  # type: ignore[no-any-return]
        return merge_chunks(self.endpoint, self.data)

    def chunks(self) -> list[dict[str, Any]]:
        """The answer as stream chunks, usage chunk last (split from the response if need be)."""
        if self.form == "chunks":
            return copy.deepcopy(self.data)  # type: ignore[no-any-return]
        return split_response(self.endpoint, self.data)

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "form": self.form, "data": self.data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Answer:
        return cls(data["endpoint"], data["form"], data["data"])


def usage_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    usage = obj.get("usage")
    if isinstance(usage, dict):
        return usage
    # Cohere's embed answer has none; it bills its input: meta.billed_units, whose text and
    # image tokens are counted apart (vLLM bills a request with any image all as image tokens).
    meta = obj.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, dict) else None
    if isinstance(billed, dict):
        return {"input_tokens": (billed.get("input_tokens") or 0) + (billed.get("image_tokens") or 0)}
    return None


def token_counts(usage: dict[str, Any] | None) -> tuple[int, int]:
    """(prompt, completion) tokens of a usage object, in OpenAI's words or in those of
    Responses and Anthropic (`input_tokens`, `output_tokens`)."""
    usage = usage or {}
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    return int(prompt or 0), int(completion or 0)


def is_usage_chunk(chunk: dict[str, Any]) -> bool:
    """The usage-only chunk vLLM sends last when `stream_options.include_usage` is set."""
    return not chunk.get("choices") and usage_of(chunk) is not None


def finish_reasons(choices: list[dict[str, Any]]) -> dict[int, str]:
    return {c.get("index", 0): c["finish_reason"] for c in choices if c.get("finish_reason")}


def renamed(obj: dict[str, Any], answer_id: str, created: int) -> dict[str, Any]:
    """A cached response or chunk under a new id and time: every answer has its own id.

    Only what an answer carries is renamed: vLLM's rerank and score answers have no time, most
    Responses and Messages events no id (the opening and closing ones hold the answer's)."""
    if isinstance(obj.get("response"), dict):  # a Responses event
        return {**obj, "response": renamed(obj["response"], answer_id, created)}
    if obj.get("type") == "message_start" and isinstance(obj.get("message"), dict):
        return {**obj, "message": renamed(obj["message"], answer_id, created)}
    if "id" not in obj:
        return obj
    return {**obj, "id": answer_id, **({"created": created} if "created" in obj else {})}


# The prefixes of vLLM's answer ids, by route.
_ID_PREFIX: dict[Route, str] = {
    "completions": "cmpl-", "chat": "chatcmpl-", "responses": "resp_", "messages": "msg_",
    "embeddings": "embd-", "cohere_embed": "embd-", "pooling": "pooling-",
    "score": "score-", "rerank": "score-", "classify": "classify-",
}


def new_id(endpoint: Route, request_id: str) -> str:
    return _ID_PREFIX[endpoint] + request_id


# --- chunks -> response ---------------------------------------------------------------------


def merge_chunks(endpoint: Route, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The response object a stream of chunks (or of typed events) adds up to."""
    if endpoint in EVENT_ROUTES:
        return events.merge(endpoint, chunks)
    head: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for key, value in chunk.items():
            if key == "choices":
                for choice in value or ():
                    index = choice.get("index", 0)
                    merged = choices.setdefault(index, {})
                    _merge_into(merged, choice)
            elif value is not None or key not in head:
                head[key] = value
    body = {**head, "object": _OBJECT[(endpoint, "response")]}
    ordered = [choices[i] for i in sorted(choices)]
    if endpoint == "chat":
        for choice in ordered:
            message = choice.pop("delta", {}) or {}
            message.setdefault("role", "assistant")
            message.setdefault("content", None)
            for call in message.get("tool_calls") or ():
                call.pop("index", None)
            choice["message"] = message
            choice.setdefault("logprobs", None)
    body["choices"] = ordered
    return body


def _merge_into(target: dict[str, Any], piece: dict[str, Any]) -> None:
    for key, value in piece.items():
        if value is None:
            target.setdefault(key, None)
            continue
        current = target.get(key)
        if isinstance(value, str) and isinstance(current, str) and key not in ("finish_reason", "role", "id", "type", "name"):
            target[key] = current + value
        elif isinstance(value, dict) and isinstance(current, dict):
            _merge_into(current, value)
        elif isinstance(value, list) and isinstance(current, list):
            if key == "tool_calls":
                _merge_tool_calls(current, value)
            else:
                current.extend(copy.deepcopy(value))
        else:
            target[key] = copy.deepcopy(value)


def _merge_tool_calls(calls: list[dict[str, Any]], pieces: list[dict[str, Any]]) -> None:
    for piece in pieces:
        index = piece.get("index", len(calls))
        for call in calls:
            if call.get("index") == index:
                _merge_into(call, piece)
                break
        else:
            calls.append(copy.deepcopy(piece))


# --- response -> chunks ---------------------------------------------------------------------


def split_response(endpoint: Route, response: dict[str, Any]) -> list[dict[str, Any]]:
    """Stream chunks that add up to a response: one per choice, then the usage chunk."""
    if endpoint in EVENT_ROUTES:  # never asked: the cache keeps their two forms apart
        raise ValueError(f"a {endpoint} response is not split into events")
    head = {k: v for k, v in response.items() if k not in ("choices", "usage", "object")}
    head["object"] = _OBJECT[(endpoint, "chunks")]
    chunks = []
    for choice in response.get("choices") or ():
        piece = copy.deepcopy(choice)
        if endpoint == "chat":
            message = piece.pop("message", {}) or {}
            delta = {k: v for k, v in message.items() if v is not None}
            for i, call in enumerate(delta.get("tool_calls") or ()):
                call.setdefault("index", i)
            if not delta.get("tool_calls"):
                delta.pop("tool_calls", None)
            piece["delta"] = delta
        chunks.append({**head, "choices": [piece]})
    chunks.append({**head, "choices": [], "usage": copy.deepcopy(response.get("usage"))})
    return chunks


def now() -> int:
    return int(time.time())
