"""Every notebook runs top to bottom in a real Jupyter kernel, as a user would run it.

nbclient executes each one with the repository root as working directory; the executed copy
(outputs and plots) is written to test-artifacts/notebooks/ for inspection, failed or not.
Notebooks are committed with their outputs stripped.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from textgen.telemetry import GpuProbe

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts" / "notebooks"
ALL = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def execute(name: str, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Run a notebook in a fresh python3 kernel; keep the executed copy, failed or not."""
    # The kernel inherits this environment: without a shared Redis the cache starts empty, so
    # the first request of a cache demo is a MISS on every run.
    monkeypatch.delenv("REDIS_URL", raising=False)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, timeout=300, startup_timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, ARTIFACTS / name)
    return nb


def text_of(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook printed or displayed as text."""
    parts: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out:
                parts.append(out.data.get("text/plain", ""))
                parts.append(out.data.get("text/html", ""))
    return "\n".join(parts)


def images_of(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {})
               for cell in nb.cells for out in cell.get("outputs", []))


def test_there_are_the_five_notebooks() -> None:
    assert [n[:2] for n in ALL] == ["01", "02", "03", "04", "05"], ALL


@pytest.mark.parametrize("name", ALL)
def test_committed_without_outputs(name: str) -> None:
    """Outputs and execution counts stay out of git: diffs show code, not results."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {i} has outputs"
            assert cell.execution_count is None, f"{name} cell {i} has an execution count"
        assert "execution" not in cell.metadata, f"{name} cell {i} has timing metadata"


@pytest.mark.engine
def test_quickstart(monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("01_quickstart.ipynb", monkeypatch)
    out = text_of(nb)
    assert "loaded" in out  # the models table
    assert "mistralai/Mistral-7B-v0.1" in out and "unavailable" in out
    cache_cell = next(c for c in nb.cells if "cache_demo = " in c.source)
    table = cache_cell.outputs[-1].data["text/plain"]
    assert table.index("MISS") < table.index("HIT"), table
    assert "requests/minute" in out and "RateDecision(admitted=True" in out


@pytest.mark.engine
def test_api_client(monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("02_api_client.ipynb", monkeypatch)
    out = text_of(nb)
    assert "text_completion" in out  # the openai client's and httpx's answers
    assert "data: [DONE]" in out  # the raw SSE stream read with httpx
    assert "server stopped" in out


@pytest.mark.engine
def test_sampling_and_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("03_sampling_and_benchmark.ipynb", monkeypatch)
    assert images_of(nb) >= 2
    out = text_of(nb)
    assert "tokens_per_s" in out and "concurrency" in out


def test_gpu_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("04_gpu_telemetry.ipynb", monkeypatch)
    out = text_of(nb)
    assert images_of(nb) >= 1  # the system series, always
    if GpuProbe().available:
        assert images_of(nb) >= 2 and "no NVIDIA GPU detected" not in out
    else:
        assert "no NVIDIA GPU detected" in out and "skipping the GPU plots" in out



@pytest.mark.engine
def test_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    nb = execute("05_evaluation.ipynb", monkeypatch)
    assert images_of(nb) >= 1  # score with intervals, score against latency
    out = text_of(nb)
    assert "('done', 16, 16)" in out  # 8 items x 2 configurations, each scored once
    assert "ci_low" in out and "one word" in out and "disagree" in out
    assert "['capitals.csv', 'capitals.parquet'] runs kept: 16" in out
