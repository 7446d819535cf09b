"""An evaluation's dataset: items read from JSON Lines or CSV, as a researcher writes them.

Each item is a prompt (`prompt`, or `question` / `input`) or a conversation (`messages`), with
what it is scored against: a `reference` (or `target`, or a string `answer`), or `choices` and
the right one's index (`answer`: an int) for a multiple-choice item. In CSV, `choices` is a
JSON list or texts separated by `|`, and `messages` a JSON list.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequest

_PROMPT = ("prompt", "question", "input")
_REFERENCE = ("reference", "target")


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    reference: str | None = None
    choices: list[str] | None = None
    answer: int | None = None  # the right choice's index

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Item:
        return cls(**data)


def parse(text: str, fmt: str) -> list[Item]:
    """Items from a dataset's text: `jsonl` or `csv`."""
    if fmt == "jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"Line {number} of the dataset is not JSON: {exc.msg}.",
                                     param="dataset") from None
            if not isinstance(row, dict):
                raise InvalidRequest(f"Line {number} of the dataset is not a JSON object.",
                                     param="dataset")
            rows.append(row)
    elif fmt == "csv":
        try:
            rows = [dict(r) for r in csv.DictReader(io.StringIO(text))]
        except csv.Error as exc:
            raise InvalidRequest(f"The dataset is not CSV: {exc}.", param="dataset") from None
    else:
        raise InvalidRequest(f"Unknown dataset format {fmt!r}: jsonl or csv.", param="format")
    items = [item(row, str(index)) for index, row in enumerate(rows)]
    if not items:
        raise InvalidRequest("The dataset has no items.", param="dataset")
    return items


def load(path: str | Path) -> list[Item]:
    """Items from a `.jsonl` or `.csv` file."""
    fmt = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}.get(Path(path).suffix.lower())
    if fmt is None:
        raise InvalidRequest("A dataset is a .jsonl or a .csv file.", param="dataset")
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, ValueError, RuntimeError) as exc:  # missing, a folder, a NUL, ~nobody
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise InvalidRequest(f"Cannot read the dataset {path}: {why}.", param="dataset") from None
    return parse(text, fmt)


def item(row: dict[str, Any], index: str) -> Item:
    where = f"Item {index} of the dataset"
    prompt = next((row[k] for k in _PROMPT if row.get(k) not in (None, "")), None)
    messages = _json_field(row.get("messages"), where, "messages")
    if (prompt is None) == (messages is None):
        raise InvalidRequest(f"{where} needs a prompt (prompt, question or input) or "
                             "messages, and not both.", param="dataset")
    if messages is not None and not (isinstance(messages, list)
                                     and all(isinstance(m, dict) for m in messages)):
        raise InvalidRequest(f"{where}: messages must be a list of objects.", param="dataset")
    choices = row.get("choices")
    if isinstance(choices, str) and choices:
        choices = (_json_field(choices, where, "choices") if choices.lstrip().startswith("[")
                   else [c.strip() for c in choices.split("|")])
    answer = row.get("answer")
    reference = next((str(row[k]) for k in _REFERENCE if row.get(k) not in (None, "")), None)
    if choices:
        if not isinstance(choices, list) or len(choices) < 2:
            raise InvalidRequest(f"{where}: choices must be a list of two or more texts.",
                                 param="dataset")
        try:
            answer = int(answer)
        except (TypeError, ValueError):
            raise InvalidRequest(f"{where}: a multiple-choice item's answer is the right "
                                 "choice's index (0, 1, ...).", param="dataset") from None
        if not 0 <= answer < len(choices):
            raise InvalidRequest(f"{where}: answer {answer} is not the index of a choice.",
                                 param="dataset")
        choices = [str(c) for c in choices]
    else:
        if reference is None and answer not in (None, ""):
            reference = str(answer)
        answer = None
    return Item(id=str(row.get("id") or index), prompt=None if prompt is None else str(prompt),
                messages=messages, reference=reference, choices=choices or None, answer=answer)


def _json_field(value: Any, where: str, name: str) -> Any:
    if not isinstance(value, str):
        return value
    if not value:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise InvalidRequest(f"{where}: {name} is not valid JSON.", param="dataset") from None
