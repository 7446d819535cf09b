"""Engines behind one async interface: in-process vLLM and remote vLLM servers."""

from .base import Engine, EngineEvent

__all__ = ["Engine", "EngineEvent"]
