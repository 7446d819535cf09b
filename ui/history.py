"""The History tab's runs: the lab's run store (textgen.runs) as the researcher reads it.

Every run the UI makes is kept by the core (the request as sent, its answer, figures, the
model's identity), so History survives a page reload and a lab restart, and shows the runs of
every page, the sweeps and the API requests that asked to be kept. This module turns kept runs
into the table's rows, JSON Lines, and what the Playground shows again when one is reopened.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd

from textgen.runs import RunRecord

from . import conversation
from .forms import CHAT, COMPLETION

COLUMNS = ["id", "time", "model", "mode", "settings", "first words", "tokens", "latency", "cache",
           "status"]
SHOWN = 200  # rows in the table; the filters find older ones
FIRST_WORDS = 48
# Where a run came from, for the mode filter (the core's `OpenAIRequest.record` values).
MODES = ["playground", "compare", "sweep", "evaluation", "api", "notebook"]

# Body fields that are the input or the transport, not settings.
_NOT_SETTINGS = {"model", "messages", "prompt", "stream", "stream_options"}


def settings_of(request: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run: every body field but the input."""
    return {k: v for k, v in request.items() if k not in _NOT_SETTINGS}


def settings_text(request: dict[str, Any]) -> str:
    """The settings in a table cell: sampling first, then what else was asked for."""
    settings = settings_of(request)
    parts = [f"{k}={settings[k]}" for k in ("temperature", "top_p", "max_tokens", "n", "seed")
             if k in settings]
    if settings.get("logprobs"):
        parts.append("logprobs")
    if isinstance(settings.get("response_format"), dict):
        parts.append(str(settings["response_format"].get("type")))
    if settings.get("tools"):
        parts.append(f"{len(settings['tools'])} tool(s)")
    return " ".join(parts)


def first_words(request: dict[str, Any]) -> str:
    """The start of what the run asked: the prompt, or the conversation's last user message."""
    if "messages" in request:
        text = conversation.last_user_text(
            [m for m in request["messages"] if isinstance(m, dict) and m.get("role") != "system"])
    else:
        prompt = request.get("prompt")
        text = prompt if isinstance(prompt, str) else json.dumps(prompt)[:FIRST_WORDS * 2]
    text = " ".join(str(text).split())
    return text if len(text) <= FIRST_WORDS else text[: FIRST_WORDS - 1] + "…"


def frame(runs: list[RunRecord]) -> pd.DataFrame:
    """The runs as the History table shows them, in the order given (the store's: newest first)."""
    rows = [
        [r.id[:8], dt.datetime.fromtimestamp(r.created).strftime("%m-%d %H:%M:%S"), r.model,
         r.mode, settings_text(r.request), first_words(r.request), r.completion_tokens,
         _seconds(r.seconds), r.cache, r.status if r.error is None else f"{r.status}: {r.error}"]
        for r in runs
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def jsonl(runs: list[RunRecord]) -> str:
    """The runs as JSON Lines, one run per line, in the table's order."""
    return "".join(json.dumps(r.row(), ensure_ascii=False) + "\n" for r in runs)


def reply_of(run: RunRecord) -> dict[str, Any] | str:
    """The assistant message (chat) or the text (completion) of a run's first choice."""
    choices = (run.answer or {}).get("choices") or [{}]
    if run.route == "chat":
        return dict(choices[0].get("message") or {"role": "assistant", "content": ""})
    return str(choices[0].get("text") or "")


def reopened(run: RunRecord) -> dict[str, Any]:
    """What the playground shows again for a run: mode, model, settings, and its input and
    reply (a conversation continues from the reply; a completion shows its text)."""
    request = run.request
    opened: dict[str, Any] = {"mode": CHAT if run.route == "chat" else COMPLETION,
                              "model": run.model, "settings": settings_of(request)}
    reply = reply_of(run)
    if "messages" in request:
        system = ""
        turns = [dict(m) for m in request["messages"]]
        if turns and turns[0].get("role") == "system":
            system = str(turns.pop(0).get("content") or "")
        if isinstance(reply, dict) and (reply.get("content") or reply.get("tool_calls")):
            # The turn as the conversation sends it on: vLLM's message also has null fields
            # (refusal, annotations, reasoning) that are not part of a request's message.
            turns.append({"role": "assistant", "content": reply.get("content"),
                          **({"tool_calls": reply["tool_calls"]} if reply.get("tool_calls")
                             else {})})
        opened.update(system=system, turns=turns)
    else:
        prompt = request.get("prompt")
        opened.update(prompt=prompt if isinstance(prompt, str) else json.dumps(prompt),
                      output=reply if isinstance(reply, str) else "")
    return opened
