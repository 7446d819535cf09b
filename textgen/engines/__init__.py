"""Engines behind one async interface: in-process vLLM and remote vLLM servers."""

from .base import Engine, EngineReply

__all__ = ["Engine", "EngineReply"]
