"""Experiments: evaluations of datasets over a grid of configurations, on the kept runs."""

from .arena import Arena
from .datasets import Item
from .evaluation import Evaluations
from .results import Results
from .spec import Config, EvaluationSpec, grid

__all__ = ["Arena", "Config", "EvaluationSpec", "Evaluations", "Item", "Results", "grid"]
