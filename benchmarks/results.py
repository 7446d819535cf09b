"""benchmarks/RESULTS.md: each benchmark keeps a section of its own, replaced when it reruns."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(heading: str, text: str) -> None:
    """Put `text` (which starts with `heading`) in place of that section, or at the end."""
    current = RESULTS.read_text()
    if heading in current:
        start = current.index(heading)
        end = current.find("\n## ", start + 1)
        current = current[:start] + text + ("\n" + current[end + 1:] if end != -1 else "")
    else:
        current = current.rstrip() + "\n\n" + text
    RESULTS.write_text(current)
