"""Experiments: evaluations of datasets over a grid of configurations, on the kept runs."""

from .datasets import Item
from .evaluation import Config, Evaluations, EvaluationSpec, Results, grid

__all__ = ["Config", "EvaluationSpec", "Evaluations", "Item", "Results", "grid"]
