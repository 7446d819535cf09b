"""Kept runs: what the lab generated, stored for History, evaluations and comparisons."""

from .diff import RunDiff, diff
from .record import RunRecord, reply_text
from .store import RunStore

__all__ = ["RunDiff", "RunRecord", "RunStore", "diff", "reply_text"]
