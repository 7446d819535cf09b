"""Kept runs: what the lab generated, stored for History, evaluations and comparisons."""

from .record import RunRecord, reply_text
from .store import RunStore

__all__ = ["RunRecord", "RunStore", "reply_text"]
