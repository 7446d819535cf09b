"""Two kept runs side by side: what differs in their settings and input, and their outputs
token by token (the model's own tokens when the run kept its logprobs, words otherwise)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .record import RunRecord

# Body fields that are the input, not a setting.
INPUT = ("messages", "prompt")
_WORDS = re.compile(r"\s+|\w+|[^\w\s]")

Op = Literal["equal", "replace", "delete", "insert"]


@dataclass(frozen=True, slots=True)
class Change:
    """A stretch of the two outputs: the same (`equal`), or what A had and B has instead."""

    op: Op
    a: str
    b: str


@dataclass(frozen=True, slots=True)
class RunDiff:
    a: str
    b: str
    # (field, A's value, B's value) for each setting that differs, the model first; a
    # setting one run left out is None there.
    settings: list[tuple[str, Any, Any]]
    same_input: bool
    output: list[Change] = field(default_factory=list)

    @property
    def same_output(self) -> bool:
        return all(change.op == "equal" for change in self.output)

    def to_json(self) -> dict[str, Any]:
        return {
            "object": "run.diff", "a": self.a, "b": self.b,
            "settings": [{"field": f, "a": a, "b": b} for f, a, b in self.settings],
            "same_input": self.same_input, "same_output": self.same_output,
            "output": [{"op": c.op, "a": c.a, "b": c.b} for c in self.output],
        }


def tokens(run: RunRecord) -> list[str]:
    """A run's output as the model's tokens when its answer has them (logprobs were asked
    for) and they make up its text; else as words, spaces and punctuation."""
    choice = ((run.answer or {}).get("choices") or [{}])[0]
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    found: list[str] = []
    if isinstance(logprobs, dict):
        if isinstance(logprobs.get("content"), list):  # chat
            found = [str(t.get("token", "")) for t in logprobs["content"]]
        elif isinstance(logprobs.get("tokens"), list):  # completions
            found = [str(t) for t in logprobs["tokens"]]
    if found and "".join(found) == run.text:
        return found
    return _WORDS.findall(run.text)


def diff(a: RunRecord, b: RunRecord) -> RunDiff:
    """`a` against `b`."""
    settings = [("model", a.model, b.model)] if a.model != b.model else []
    names = sorted((set(a.request) | set(b.request)) - {"model", *INPUT})
    settings += [(n, a.request.get(n), b.request.get(n)) for n in names
                 if a.request.get(n) != b.request.get(n)]
    same_input = all(a.request.get(n) == b.request.get(n) for n in INPUT)
    left, right = tokens(a), tokens(b)
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    output = [Change(op, "".join(left[i1:i2]), "".join(right[j1:j2]))  # type: ignore[arg-type]
              for op, i1, i2, j1, j2 in matcher.get_opcodes()]
    return RunDiff(a=a.id, b=b.id, settings=settings, same_input=same_input, output=output)
