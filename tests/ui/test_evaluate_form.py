"""The Evaluate tab's form read into an EvaluationSpec: a dataset, or an lm-eval task."""

from __future__ import annotations

import gradio as gr
import pytest

from ui.tabs.evaluate import SAMPLE, _spec


def form(**changes: object) -> dict:
    values = {"text": SAMPLE, "file": None, "task": "", "folder": "", "models": ["m"],
              "temps": "0, 0.7", "system": "", "scorer": "contains", "pattern": "",
              "route": "chat", "max_tokens": 16, "concurrency": 2}
    return {**values, **changes}


def test_a_dataset_over_models_and_temperatures() -> None:
    spec = _spec(**form())  # type: ignore[arg-type]
    assert spec.items is not None and len(spec.items) == 6 and spec.lm_eval_task is None
    assert [c.settings["temperature"] for c in spec.configs] == [0.0, 0.7]


def test_an_lm_eval_task_replaces_the_dataset() -> None:
    spec = _spec(**form(task=" arc_tiny ", folder="/tasks"))  # type: ignore[arg-type]
    assert spec.items is None
    assert (spec.lm_eval_task, spec.lm_eval_include_path) == ("arc_tiny", "/tasks")


def test_bad_temperatures_are_said_plainly() -> None:
    with pytest.raises(gr.Error):
        _spec(**form(temps="zero"))  # type: ignore[arg-type]
