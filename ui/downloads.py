"""Files the page offers for download (conversation JSON, history JSONL, sweep CSV).

Gradio serves files from the system's temp directory; each file gets a folder of its own there,
so it keeps a plain name ("conversation.json") and two pages never overwrite each other's.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

_ROOT: Path | None = None
# Gradio copies a file into its own cache when it sends it to the page: ours can go soon after.
KEEP_SECONDS = 3600


def write(name: str, text: str) -> str:
    """Write `text` to a new file called `name`; its path, for a DownloadButton's value."""
    global _ROOT
    if _ROOT is None or not _ROOT.is_dir():
        _ROOT = Path(tempfile.mkdtemp(prefix="textgen-lab-downloads-"))
    _prune(_ROOT)
    path = Path(tempfile.mkdtemp(dir=_ROOT)) / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _prune(root: Path) -> None:
    cutoff = time.time() - KEEP_SECONDS
    for folder in root.iterdir():
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue
