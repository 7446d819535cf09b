"""How an answer is scored: a number in [0, 1] per item and configuration (None: the item
cannot be scored that way, e.g. no reference).

By name (what the API and the UI send): `exact_match`, `contains`, `regex` (with a `pattern`),
`json_valid`, `json_schema` (with a `schema`), and `choice` (multiple choice by log-likelihood,
which the evaluation runs itself: it asks for each choice's log-probability, not for text). From a
notebook, any Python function `(item, output) -> float | None`.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from typing import Any

from ..errors import InvalidRequest
from .datasets import Item

Scorer = Callable[[Item, str], float | None]
CHOICE = "choice"
NAMES = ("exact_match", "contains", "regex", "json_valid", "json_schema", CHOICE)


def normalized(text: str) -> str:
    """Case, punctuation and spacing aside, as lm-eval's exact_match with ignore_case and
    ignore_punctuation compares."""
    text = text.casefold().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def exact_match(item: Item, output: str) -> float | None:
    if item.reference is None:
        return None
    return float(normalized(output) == normalized(item.reference))


def contains(item: Item, output: str) -> float | None:
    if item.reference is None:
        return None
    return float(normalized(item.reference) in normalized(output))


def regex(pattern: str) -> Scorer:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise InvalidRequest(f"The scorer's pattern is not a regular expression: {exc}.",
                             param="scorer.pattern") from None

    def score(_item: Item, output: str) -> float:
        return float(compiled.search(output) is not None)

    return score


def json_valid(_item: Item, output: str) -> float:
    try:
        json.loads(output)
    except ValueError:
        return 0.0
    return 1.0


def json_schema(schema: dict[str, Any]) -> Scorer:
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(f"The scorer's schema is not a JSON schema: {exc.message}.",
                             param="scorer.schema") from None
    validator = jsonschema.Draft202012Validator(schema)

    def score(_item: Item, output: str) -> float:
        try:
            value = json.loads(output)
        except ValueError:
            return 0.0
        return float(validator.is_valid(value))

    return score


def scorer(spec: str | dict[str, Any] | Scorer) -> Scorer | str:
    """A scorer from its spec: a name, `{"name": ..., "pattern"/"schema": ...}`, or a function.
    `choice` comes back as its name: the evaluation scores it from log-likelihoods."""
    if callable(spec):
        return spec
    options: dict[str, Any] = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = options.get("name")
    if name == "exact_match":
        return exact_match
    if name == "contains":
        return contains
    if name == "json_valid":
        return json_valid
    if name == "regex":
        if not isinstance(options.get("pattern"), str):
            raise InvalidRequest("The regex scorer needs a pattern.", param="scorer.pattern")
        return regex(options["pattern"])
    if name == "json_schema":
        if not isinstance(options.get("schema"), dict):
            raise InvalidRequest("The json_schema scorer needs a schema (a JSON object).",
                                 param="scorer.schema")
        return json_schema(options["schema"])
    if name == CHOICE:
        return CHOICE
    raise InvalidRequest(f"Unknown scorer {name!r}: one of {', '.join(NAMES)}, or a Python "
                         "function from a notebook.", param="scorer")
