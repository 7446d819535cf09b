"""The runs made in one browser tab: the researcher's lab notebook.

Each run is kept as a plain dict (JSON-ready, so the list downloads as JSONL as it is): when,
which model and mode, the request body as it was sent, the reply, and its figures. The History
tab shows them as a table, newest first, and reopens one into the playground.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd

from . import conversation

COLUMNS = ["#", "time", "model", "mode", "settings", "first words", "tokens", "latency", "cache",
           "status"]
MAX_RUNS = 200  # per browser tab; the oldest go first
FIRST_WORDS = 48

# Body fields that are the input or the transport, not settings.
_NOT_SETTINGS = {"model", "messages", "prompt", "stream", "stream_options"}


def entry(*, number: int, when: float, mode: str, body: dict[str, Any], reply: dict[str, Any] | str,
          status: str, cache: str | None, prompt_tokens: int, completion_tokens: int,
          seconds: float, ttft: float | None) -> dict[str, Any]:
    """One run as the notebook keeps it; `reply` is the assistant message (chat) or the text."""
    return {
        "number": number, "time": when, "model": body.get("model"), "mode": mode,
        "request": {k: v for k, v in body.items() if k not in ("stream", "stream_options")},
        "reply": reply, "status": status, "cache": cache, "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens, "seconds": round(seconds, 4),
        "ttft": None if ttft is None else round(ttft, 4),
    }


def added(runs: list[dict[str, Any]] | None, run: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(runs or [])[-(MAX_RUNS - 1):], run]


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


def frame(runs: list[dict[str, Any]] | None) -> pd.DataFrame:
    """The runs as the History table shows them, newest first."""
    rows = [
        [r["number"], dt.datetime.fromtimestamp(r["time"]).strftime("%H:%M:%S"), r["model"],
         r["mode"], settings_text(r["request"]), first_words(r["request"]),
         r["completion_tokens"], _seconds(r["seconds"]), r["cache"] or "", r["status"]]
        for r in reversed(runs or [])
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def jsonl(runs: list[dict[str, Any]] | None) -> str:
    """The notebook as JSON Lines, oldest first: one run per line."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in runs or [])


def find(runs: list[dict[str, Any]] | None, number: int) -> dict[str, Any] | None:
    return next((r for r in runs or [] if r["number"] == number), None)


def reopened(run: dict[str, Any]) -> dict[str, Any]:
    """What the playground shows again for a run: mode, model, settings, and its input and
    reply (a conversation continues from the reply; a completion shows its text)."""
    request = run["request"]
    opened: dict[str, Any] = {"mode": run["mode"], "model": run["model"],
                              "settings": settings_of(request)}
    if "messages" in request:
        system = ""
        turns = [dict(m) for m in request["messages"]]
        if turns and turns[0].get("role") == "system":
            system = str(turns.pop(0).get("content") or "")
        reply = run["reply"]
        if isinstance(reply, dict) and (reply.get("content") or reply.get("tool_calls")):
            turns.append(reply)
        opened.update(system=system, turns=turns)
    else:
        prompt = request.get("prompt")
        opened.update(prompt=prompt if isinstance(prompt, str) else json.dumps(prompt),
                      output=run["reply"] if isinstance(run["reply"], str) else "")
    return opened
