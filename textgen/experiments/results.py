"""An evaluation's results as data frames: one row per configuration with its mean score and
confidence interval, one row per item and configuration, and the two side by side."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

_COLUMNS = ["experiment", "config", "item", "request_id", "output", "score", "status", "seconds",
            "completion_tokens"]


@dataclass
class Results:
    """An evaluation's results: `summary` (one row per configuration) and `items` (one row per
    item and configuration); `wide()` puts the configurations side by side."""

    summary: pd.DataFrame
    items: pd.DataFrame
    # The settings of the configurations the summary has a column for (temperature, ...).
    settings: tuple[str, ...] = ()

    @classmethod
    def of(cls, labels: list[str], scores: list[Any],
           configs: list[dict[str, Any]] | None = None) -> Results:
        """From the experiment's configurations (in their order), its score rows, and the
        configurations as kept (their model and scalar settings become summary columns)."""
        items = pd.DataFrame(scores, columns=_COLUMNS)
        rows = [_summary(label, items[items["config"] == label]) for label in labels]
        names: list[str] = []
        for row, config in zip(rows, configs or [], strict=False):
            row["model"] = config.get("model")
            for name, value in (config.get("settings") or {}).items():
                if isinstance(value, int | float | str | bool) and name not in row:
                    row[name] = value
                    if name not in names:
                        names.append(name)
        return cls(summary=pd.DataFrame(rows), items=items.drop(columns=["experiment"]),
                   settings=tuple(names))

    def varying(self) -> str | None:
        """The first numeric setting that differs between configurations: what a plot of
        score against a setting puts on its x axis (None when no setting varies)."""
        for name in self.settings:
            values = pd.to_numeric(self.summary[name], errors="coerce").dropna()
            if values.nunique() > 1 and len(values) == len(self.summary):
                return name
        return None

    def wide(self) -> pd.DataFrame:
        """One row per item: each configuration's output and score, and whether they disagree."""
        if self.items.empty:
            return pd.DataFrame()
        outputs = self.items.pivot(index="item", columns="config", values="output")
        scores = self.items.pivot(index="item", columns="config", values="score")
        frame = pd.concat({"output": outputs, "score": scores}, axis=1)
        frame[("disagree", "")] = scores.nunique(axis=1, dropna=False) > 1
        return frame


def _summary(label: str, rows: pd.DataFrame) -> dict[str, Any]:
    scored = rows["score"].dropna().astype(float)
    low, high = confidence_interval(scored.tolist())
    return {
        "config": label, "items": len(rows), "scored": len(scored),
        "score": float(scored.mean()) if len(scored) else None, "ci_low": low, "ci_high": high,
        "errors": int((rows["status"] != "ok").sum()),
        "mean_seconds": float(rows["seconds"].mean()) if len(rows) else None,
        "p50_seconds": float(rows["seconds"].median()) if len(rows) else None,
        "mean_completion_tokens": float(rows["completion_tokens"].mean()) if len(rows) else None,
    }


def confidence_interval(scores: list[float], z: float = 1.96) -> tuple[float | None, float | None]:
    """95% interval of the mean score: Wilson's for right/wrong scores (it stays inside [0, 1]
    and is right for small n), the normal one for graded scores."""
    n = len(scores)
    if n == 0:
        return None, None
    mean = sum(scores) / n
    if all(s in (0.0, 1.0) for s in scores):
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)
    if n == 1:
        return mean, mean
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    half = z * sd / math.sqrt(n)
    return mean - half, mean + half
