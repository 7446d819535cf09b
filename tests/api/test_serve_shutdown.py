"""`textgen serve` stops on SIGTERM while a browser tab is open, engine and all.

An open playground tab holds Gradio's heartbeat stream, which never ends by itself: unbounded,
uvicorn waited on it for ever, the service manager's SIGKILL followed, and vLLM's engine-core
process was left running with its memory and a CPU.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.processes import lab_server, stop
from textgen import DEFAULT_MODEL

pytestmark = pytest.mark.engine

GRACE = 2.0


def test_sigterm_with_a_browser_tab_open_stops_the_server_and_its_engine() -> None:
    env = {"REDIS_URL": "", "METRICS_PORT": "0", "SHUTDOWN_GRACE_SECONDS": str(GRACE)}
    with lab_server(env, token=None, wait_model=DEFAULT_MODEL) as lab, \
            httpx.stream("GET", f"{lab.base_url}/ui/gradio_api/heartbeat/tab1", timeout=60) as tab:
        assert tab.status_code == 200  # what an open playground tab holds
        started = time.monotonic()
        stop(lab.proc)  # no SIGKILL needed, no engine process left behind
        took = time.monotonic() - started
    # The grace period, then the engine's own shutdown (~5 s).
    assert took < GRACE + 20
    assert "timeout graceful shutdown exceeded" in lab.log()
