"""ENGINE_NICENESS lowers the priority of what the engine's start spawns, and nothing else;
an engine whose start was given up on (the lab stopping meanwhile) is released when it is built.

The real engine's processes are checked by the browser tests' lab (tests/ui/conftest.py, which
runs with ENGINE_NICENESS=19); here the mechanism, with a plain child process for the engine.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

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
    assert await _in_new_thread(_spawn_and_read_nice, niceness=lower, orphaned=print) == lower
    # The lab's own threads (this one, the event loop's) keep their priority.
    assert os.nice(0) == before
    assert await _in_new_thread(_spawn_and_read_nice, niceness=0, orphaned=print) == before


async def test_an_error_in_the_start_reaches_the_caller() -> None:
    def fail() -> None:
        raise ValueError("no such model")

    with pytest.raises(ValueError, match="no such model"):
        await _in_new_thread(fail, niceness=3, orphaned=print)


async def test_what_a_cancelled_start_builds_is_released() -> None:
    building, go = threading.Event(), threading.Event()
    released: list[str] = []

    def build() -> str:
        building.set()
        go.wait(30)
        return "engine"

    start = asyncio.create_task(_in_new_thread(build, niceness=0, orphaned=released.append))
    assert await asyncio.to_thread(building.wait, 30)
    start.cancel()  # the lab stops while the engine is being built
    with pytest.raises(asyncio.CancelledError):
        await start
    assert released == []  # not built yet
    go.set()
    for _ in range(300):
        if released:
            break
        await asyncio.sleep(0.1)
    assert released == ["engine"]
