"""What an evaluation runs: a grid of configurations (model or adapter, sampling settings,
system prompt) over a dataset or an lm-evaluation-harness task, with a scorer. Plain data,
checked when made (a bad spec is a 400 before anything runs) and kept as JSON with the
experiment, so an evaluation resumes after a restart."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import InvalidRequest
from . import scorers
from .datasets import Item

Route = Literal["chat", "completions"]
# Body fields a configuration may set: the input and the transport are the evaluation's.
_RESERVED = {"model", "messages", "prompt", "stream", "stream_options", "n"}


@dataclass(frozen=True, slots=True)
class Config:
    """One column of the grid: a model (or adapter), its sampling settings, a system prompt."""

    model: str
    settings: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    name: str = ""

    def __post_init__(self) -> None:
        reserved = sorted(_RESERVED & set(self.settings))
        if reserved:
            raise InvalidRequest(f"A configuration's settings cannot set {', '.join(reserved)}: "
                                 "the evaluation sends the items.", param="configs")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        parts = [self.model, *(f"{k}={v}" for k, v in sorted(self.settings.items()))]
        if self.system:
            parts.append(f"system={self.system[:24]!r}")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def grid(models: Iterable[str], settings: dict[str, list[Any]] | None = None,
         systems: Iterable[str | None] = (None,)) -> list[Config]:
    """Every combination: models × each setting's values × system prompts."""
    settings = settings or {}
    names = list(settings)
    return [Config(model=m, settings=dict(zip(names, values, strict=True)), system=system)
            for m in models for system in systems
            for values in itertools.product(*(settings[n] for n in names))]


@dataclass
class EvaluationSpec:
    """What an evaluation runs. `items` or `lm_eval_task`; `scorer` a name, a dict with options,
    or (from a notebook) a function, which cannot be resumed after a restart."""

    configs: list[Config]
    items: list[Item] | None = None
    lm_eval_task: str | None = None
    lm_eval_include_path: str | None = None
    scorer: str | dict[str, Any] | scorers.Scorer = "exact_match"
    route: Route = "chat"
    concurrency: int = 4
    max_tokens: int = 64
    name: str = ""

    def __post_init__(self) -> None:
        if not self.configs:
            raise InvalidRequest("An evaluation needs at least one configuration.", param="configs")
        if (self.items is None) == (self.lm_eval_task is None):
            raise InvalidRequest("An evaluation needs a dataset: items, or an lm-eval task.",
                                 param="dataset")
        labels = [c.label for c in self.configs]
        if len(set(labels)) != len(labels):
            raise InvalidRequest("Two configurations have the same name.", param="configs")
        if not 1 <= self.concurrency <= 256:
            raise InvalidRequest("concurrency is 1 to 256.", param="concurrency")
        if self.items is not None:
            chosen = scorers.scorer(self.scorer)  # a bad scorer fails here, not mid-run
            if chosen == scorers.CHOICE and any(not i.choices or i.prompt is None
                                                for i in self.items):
                raise InvalidRequest("The choice scorer needs every item to have a prompt "
                                         "and choices.", param="scorer")
            ids = [i.id for i in self.items]
            if len(set(ids)) != len(ids):
                raise InvalidRequest("Two dataset items have the same id.", param="dataset")

    @property
    def total(self) -> int:
        return len(self.configs) * len(self.items) if self.items is not None else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "configs": [c.to_json() for c in self.configs],
            "items": None if self.items is None else [i.to_json() for i in self.items],
            "lm_eval_task": self.lm_eval_task, "lm_eval_include_path": self.lm_eval_include_path,
            "scorer": self.scorer if not callable(self.scorer) else {"name": "python"},
            "route": self.route, "concurrency": self.concurrency, "max_tokens": self.max_tokens,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvaluationSpec:
        items = data.get("items")
        return cls(
            name=data.get("name") or "", configs=[Config(**c) for c in data["configs"]],
            items=None if items is None else [Item.from_json(i) for i in items],
            lm_eval_task=data.get("lm_eval_task"),
            lm_eval_include_path=data.get("lm_eval_include_path"),
            scorer=data.get("scorer") or "exact_match", route=data.get("route") or "chat",
            concurrency=int(data.get("concurrency") or 4),
            max_tokens=int(data.get("max_tokens") or 64),
        )
