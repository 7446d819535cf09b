"""ui: the lab's Gradio Blocks, mounted by the API at /ui or run alone with `python -m ui`."""

from .lab import build_ui

__all__ = ["build_ui"]
