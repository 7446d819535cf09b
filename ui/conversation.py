"""A chat conversation as the OpenAI `messages` list, and what the chat view does with it.

The conversation is kept as the turns after the system prompt (`user`, `assistant` — with
`tool_calls` when the model called a tool — and `tool` results), exactly the messages the API
would get; the chatbot's bubbles, Regenerate, Edit, tool results, export and import are pure
functions of it.
"""

from __future__ import annotations

import json
from typing import Any

Turns = list[dict[str, Any]]

ROLES = ("system", "user", "assistant", "tool")
EXPORT_FORMAT = "textgen-lab conversation"


def messages(system: str | None, turns: Turns) -> list[dict[str, Any]]:
    """The `messages` of a chat request: the system prompt (when there is one), then the turns."""
    head = [{"role": "system", "content": system}] if system and system.strip() else []
    return head + [dict(turn) for turn in turns]


def assistant_turn(text: str, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The assistant's message as the API returns it: content, and tool calls if it made any."""
    if tool_calls:
        # OpenAI's shape: no content beside tool calls is null, not "".
        return {"role": "assistant", "content": text or None, "tool_calls": tool_calls}
    return {"role": "assistant", "content": text}


def last_user_text(turns: Turns) -> str:
    for turn in reversed(turns):
        if turn.get("role") == "user":
            return str(turn.get("content") or "")
    return ""


# --- what the chat view does --------------------------------------------------------------


def without_last_reply(turns: Turns) -> Turns:
    """The conversation to send again for Regenerate: the last reply dropped.

    Only the trailing assistant message goes; a user message or a tool result before it stays
    and is answered anew. Nothing to regenerate when the conversation does not end in a reply.
    """
    if not turns or turns[-1].get("role") != "assistant":
        raise ValueError("There is no reply to regenerate: send a message first.")
    return turns[:-1]


def edited(turns: Turns, index: int, text: str) -> Turns:
    """Edit and resend: the user turn at `index` gets `text`, and what followed it goes."""
    if not 0 <= index < len(turns) or turns[index].get("role") != "user":
        raise ValueError("Only your own messages can be edited.")
    if not text.strip():
        raise ValueError("An edited message cannot be empty.")
    return [*turns[:index], {"role": "user", "content": text}]


def pending_tool_calls(turns: Turns) -> list[dict[str, Any]]:
    """The tool calls of the last assistant message that have no result yet, in order."""
    answered: set[str] = set()
    for turn in reversed(turns):
        if turn.get("role") == "tool":
            answered.add(str(turn.get("tool_call_id")))
        elif turn.get("role") == "assistant":
            return [c for c in turn.get("tool_calls") or () if str(c.get("id")) not in answered]
        else:
            return []
    return []


def with_tool_result(turns: Turns, result: str) -> Turns:
    """The result of the first unanswered tool call appended as a `tool` message."""
    pending = pending_tool_calls(turns)
    if not pending:
        raise ValueError("No tool call is waiting for a result.")
    return [*turns, {"role": "tool", "tool_call_id": pending[0].get("id"), "content": result}]


# --- the chatbot's bubbles ----------------------------------------------------------------


def display(turns: Turns, streaming: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Chatbot messages (Gradio's messages format) for the turns, plus a reply being streamed.

    A tool call is a card of its own (a titled box: the function and its arguments), and so is
    a tool result; `turn_of` maps a bubble back to its turn.
    """
    bubbles: list[dict[str, Any]] = []
    for turn in [*turns, *([streaming] if streaming else [])]:
        bubbles += _bubbles(turn, _tool_names(turns))
    return bubbles


def turn_of(turns: Turns, bubble: int) -> int:
    """The index in `turns` of the turn that chatbot message number `bubble` shows."""
    names = _tool_names(turns)
    seen = 0
    for index, turn in enumerate(turns):
        seen += len(_bubbles(turn, names))
        if bubble < seen:
            return index
    raise IndexError(bubble)


def _bubbles(turn: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    role = turn.get("role")
    content = turn.get("content")
    text = content if isinstance(content, str) else _text_of(content)
    if role == "user":
        return [{"role": "user", "content": text}]
    if role == "tool":
        name = names.get(str(turn.get("tool_call_id")), "tool")
        return [{"role": "user", "content": text,
                 "metadata": {"title": f"↩ Tool result · {name}"}}]
    out = [{"role": "assistant", "content": text}] if text else []
    for call in turn.get("tool_calls") or ():
        out.append({"role": "assistant", "content": tool_call_card(call),
                    "metadata": {"title": f"⚙ Tool call · {call_name(call)}"}})
    return out or [{"role": "assistant", "content": ""}]


def _tool_names(turns: Turns) -> dict[str, str]:
    return {str(c.get("id")): call_name(c) for t in turns for c in t.get("tool_calls") or ()}


def _text_of(content: Any) -> str:
    # Content parts ([{"type": "text", "text": ...}]) as OpenAI allows them.
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def call_name(call: dict[str, Any]) -> str:
    return str((call.get("function") or {}).get("name") or "?")


def tool_call_card(call: dict[str, Any]) -> str:
    """Markdown for one tool call: its name and id, and its arguments (pretty when JSON)."""
    arguments = str((call.get("function") or {}).get("arguments") or "")
    try:
        shown = json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
        note = ""
    except ValueError:
        shown, note = arguments, "\n\n*The arguments are not valid JSON.*"
    return (f"**{call_name(call)}** `{call.get('id', '')}`\n\n```json\n{shown}\n```{note}\n\n"
            "*Type the tool's result below to continue.*")


# --- export and import --------------------------------------------------------------------


def export(model: str | None, system: str | None, turns: Turns,
           settings: dict[str, Any]) -> dict[str, Any]:
    """The conversation as a JSON document: `messages` as the API takes them, and the settings."""
    return {"format": EXPORT_FORMAT, "model": model, "messages": messages(system, turns),
            "settings": settings}


def parse_import(text: str) -> tuple[str | None, str, Turns, dict[str, Any]]:
    """(model, system prompt, turns, settings) from an exported conversation, or from a bare
    `messages` list or request body; raises ValueError saying what is wrong."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"The file is not JSON ({exc.msg} at line {exc.lineno}).") from None
    if isinstance(document, list):
        document = {"messages": document}
    if not isinstance(document, dict) or not isinstance(document.get("messages"), list):
        raise ValueError("Expected a JSON object with a \"messages\" list (or the list itself).")
    system, turns = "", []
    for number, message in enumerate(document["messages"], start=1):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ValueError(f"Message {number} needs a \"role\" of {', '.join(ROLES)}.")
        if message["role"] == "system":
            if turns or system:
                raise ValueError("Only the first message may be the system prompt.")
            system = _text_of(message.get("content"))
            continue
        if message.get("content") is None and not message.get("tool_calls"):
            raise ValueError(f"Message {number} has no content.")
        turns.append(dict(message))
    settings = document.get("settings") or {}
    if not isinstance(settings, dict):
        raise ValueError("\"settings\" must be a JSON object.")
    model = document.get("model")
    return (model if isinstance(model, str) else None), system, turns, settings
