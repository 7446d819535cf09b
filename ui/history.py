"""The History tab's runs: the lab's run store (textgen.runs) as the researcher reads it.

Every run the UI makes is kept by the core (the request as sent, its answer, figures, the
model's identity), so History survives a page reload and a lab restart, and shows the runs of
every page, the sweeps and the API requests that asked to be kept. This module turns kept runs
into the table's rows, JSON Lines, and what the Playground shows again when one is reopened.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import Any

import pandas as pd

from textgen.runs import RunDiff, RunRecord

from . import conversation
from .forms import CHAT, COMPLETION

COLUMNS = ["id", "time", "model", "mode", "settings", "first words", "tokens", "latency", "cache",
           "status"]
SHOWN = 200  # rows in the table; the filters find older ones
FIRST_WORDS = 48
# Where a run came from, for the mode filter (the core's `OpenAIRequest.record` values).
MODES = ["playground", "compare", "sweep", "evaluation", "api", "notebook", "rerun"]

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
    if run.route == "responses":  # the text of its output messages
        return {"role": "assistant", "content": run.text}
    choices = (run.answer or {}).get("choices") or [{}]
    if run.route == "chat":
        return dict(choices[0].get("message") or {"role": "assistant", "content": ""})
    return str(choices[0].get("text") or "")


def reopened(run: RunRecord) -> dict[str, Any]:
    """What the playground shows again for a run: mode, model, settings, and its input and
    reply (a conversation continues from the reply; a completion shows its text)."""
    request = run.request
    if run.route == "responses":  # a conversation, as the chat view shows it
        given = request.get("input")
        request = {**request, "messages": given if isinstance(given, list)
                   else [{"role": "user", "content": str(given or "")}]}
    opened: dict[str, Any] = {"mode": CHAT if run.route in ("chat", "responses") else COMPLETION,
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


def choice_label(run: RunRecord) -> str:
    """A run in the Re-run / Diff pickers: its short id, time, model and first words."""
    when = dt.datetime.fromtimestamp(run.created).strftime("%H:%M:%S")
    return f"{run.id[:8]} · {when} · {run.model} · {first_words(run.request)}"


def diff_html(d: RunDiff) -> str:
    """Two runs side by side: the settings that differ, and the outputs with what only A had
    struck through and what only B has underlined."""
    def cell(value: Any) -> str:
        return "<em>unset</em>" if value is None else html.escape(json.dumps(value))

    if d.settings:
        rows = "".join(f"<tr><td><code>{html.escape(f)}</code></td><td>{cell(a)}</td>"
                       f"<td>{cell(b)}</td></tr>" for f, a, b in d.settings)
        settings = (f'<table class="run-diff-settings"><tr><th>setting</th><th>A '
                    f"{d.a[:8]}</th><th>B {d.b[:8]}</th></tr>{rows}</table>")
    else:
        settings = "<p>Same model and settings.</p>"
    same_input = "<p>Same input.</p>" if d.same_input else "<p><b>The inputs differ.</b></p>"
    parts = []
    for change in d.output:
        if change.op == "equal":
            parts.append(html.escape(change.a))
            continue
        if change.a:
            parts.append(f'<del class="diff-a">{html.escape(change.a)}</del>')
        if change.b:
            parts.append(f'<ins class="diff-b">{html.escape(change.b)}</ins>')
    verdict = ("The outputs are the same." if d.same_output else
               "Struck through: only in A; underlined: only in B.")
    return (f'<div class="run-diff">{settings}{same_input}<p>{verdict}</p>'
            f'<pre class="run-diff-output">{"".join(parts)}</pre></div>')
