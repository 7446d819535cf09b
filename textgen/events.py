"""Answers of the routes that stream typed events: OpenAI's Responses and Anthropic's Messages.

Their streams are not chunks of choices but a sequence of events, each with a `type`
(`response.created` ... `response.completed`; `message_start` ... `message_stop`), sent as
`event: <type>` + `data: <json>` with no `[DONE]`. The lab passes them on as vLLM makes them;
it reads them only to know when an answer is whole (to cache it), what it cost (usage), and
what it adds up to (a kept run's answer as one object).
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from .request import Route

# The events that close a Responses stream, and the reasons a message stops on its own.
_ENDED_RESPONSE_EVENTS = frozenset({"response.completed", "response.incomplete",
                                    "response.failed"})
_MESSAGE_STOPS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use"})


def finished(endpoint: Route, *, response: dict[str, Any] | None = None,
             events: list[dict[str, Any]] | None = None) -> bool:
    """The answer ran to its end on its own (only such answers are cached): a response
    completed or stopped at `max_output_tokens` (a chat's "length"), a message stopped."""
    if endpoint == "responses":
        if response is None:
            closing = [e for e in events or () if e.get("type") in _ENDED_RESPONSE_EVENTS]
            response = closing[-1].get("response") if closing else None
        if not isinstance(response, dict):
            return False
        reason = (response.get("incomplete_details") or {}).get("reason")
        return response.get("status") == "completed" or (
            response.get("status") == "incomplete" and reason == "max_output_tokens")
    if response is not None:
        return response.get("stop_reason") in _MESSAGE_STOPS
    return any(e.get("type") == "message_stop" for e in events or ())


def is_last(endpoint: Route, event: dict[str, Any]) -> bool:
    """The event after which the upstream's stream has nothing more to say."""
    kind = event.get("type")
    if endpoint == "responses":
        return kind in _ENDED_RESPONSE_EVENTS
    return kind == "message_stop"


def is_error(event: dict[str, Any]) -> bool:
    """An error event: Responses' `error` or `response.failed`, Anthropic's `error`."""
    return event.get("type") in ("error", "response.failed")


def take_usage(endpoint: Route, usage: dict[str, Any] | None,
               event: dict[str, Any]) -> dict[str, Any] | None:
    """The usage known after `event` (Responses: in the closing event's response; Messages:
    the input tokens in `message_start`, the output tokens in `message_delta`)."""
    if endpoint == "responses":
        response = event.get("response")
        if isinstance(response, dict) and isinstance(response.get("usage"), dict):
            return response["usage"]  # type: ignore[no-any-return]
        return usage
    kind = event.get("type")
    if kind == "message_start":
        return dict((event.get("message") or {}).get("usage") or {})
    if kind == "message_delta" and isinstance(event.get("usage"), dict):
        return {**(usage or {}), **{k: v for k, v in event["usage"].items() if v is not None}}
    return usage


def merge(endpoint: Route, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The one object a stream of events adds up to (as far as it came)."""
    if endpoint == "responses":
        responses = [e["response"] for e in events if isinstance(e.get("response"), dict)]
        return copy.deepcopy(responses[-1]) if responses else {}
    return _merge_message(events)


def _merge_message(events: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {}
    blocks: dict[int, dict[str, Any]] = {}
    partial_json: dict[int, str] = {}
    for event in events:
        kind = event.get("type")
        index = int(event.get("index") or 0)
        if kind == "message_start":
            message = copy.deepcopy(event.get("message") or {})
        elif kind == "content_block_start":
            blocks[index] = copy.deepcopy(event.get("content_block") or {})
        elif kind == "content_block_delta":
            block, delta = blocks.setdefault(index, {}), event.get("delta") or {}
            if delta.get("type") == "input_json_delta":
                partial_json[index] = partial_json.get(index, "") + (delta.get("partial_json") or "")
            for field in ("text", "thinking", "signature"):
                if isinstance(delta.get(field), str):
                    block[field] = block.get(field, "") + delta[field]
        elif kind == "message_delta":
            message.update({k: v for k, v in (event.get("delta") or {}).items()})
            message["usage"] = take_usage("messages", message.get("usage"), event)
    for index, text in partial_json.items():
        try:
            blocks[index]["input"] = orjson.loads(text) if text else {}
        except orjson.JSONDecodeError:
            blocks[index]["input"] = text  # cut short: what came, as text
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message
