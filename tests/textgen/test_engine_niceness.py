"""ENGINE_NICENESS lowers the priority of what the engine's start spawns, and nothing else.

The real engine's processes are checked by the browser tests' lab (tests/ui/conftest.py, which
runs with ENGINE_NICENESS=19); here the mechanism, with a plain child process for the engine.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from textgen.engines.vllm_local import _in_new_thread


def _spawn_and_read_nice() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.nice(0))"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


async def test_a_process_spawned_by_the_start_inherits_the_niceness() -> None:
    before = os.nice(0)
    if before >= 19:
        pytest.skip("this test runs at the lowest priority already: nothing to lower")
    lower = min(before + 7, 19)
    assert await _in_new_thread(_spawn_and_read_nice, niceness=lower) == lower
    # The lab's own threads (this one, the event loop's) keep their priority.
    assert os.nice(0) == before
    assert await _in_new_thread(_spawn_and_read_nice, niceness=0) == before


async def test_an_error_in_the_start_reaches_the_caller() -> None:
    def fail() -> None:
        raise ValueError("no such model")

    with pytest.raises(ValueError, match="no such model"):
        await _in_new_thread(fail, niceness=3)
