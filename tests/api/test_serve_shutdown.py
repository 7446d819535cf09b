"""`textgen serve` on SIGTERM: drains, ends what is left with an error event, stops its engine.

An open playground tab holds Gradio's heartbeat stream, which never ends by itself: unbounded,
uvicorn waited on it for ever, the service manager's SIGKILL followed, and vLLM's engine-core
process was left running with its memory and a CPU. A generation still streaming when the
grace period ends must not just stop: its client would take a cut stream for a whole answer.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.support.processes import lab_server, stop
from textgen import DEFAULT_MODEL

pytestmark = pytest.mark.engine

GRACE = 3.0


def test_sigterm_ends_streams_with_an_error_and_stops_the_server_and_its_engine() -> None:
    env = {"REDIS_URL": "", "METRICS_PORT": "0", "SHUTDOWN_GRACE_SECONDS": str(GRACE)}
    body = {"model": DEFAULT_MODEL, "prompt": "Count: 1, 2,", "max_tokens": 1500,
            "ignore_eos": True, "stream": True}
    events: list[str] = []
    streaming = threading.Event()

    def generate(url: str) -> None:
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(line)
                    streaming.set()

    with lab_server(env, token=None, wait_model=DEFAULT_MODEL) as lab, \
            httpx.stream("GET", f"{lab.base_url}/ui/gradio_api/heartbeat/tab1", timeout=60) as tab:
        assert tab.status_code == 200  # what an open playground tab holds
        reader = threading.Thread(target=generate, args=(lab.base_url,))
        reader.start()
        assert streaming.wait(120)
        started = time.monotonic()
        stop(lab.proc)  # no SIGKILL needed, no engine process left behind
        took = time.monotonic() - started
        reader.join(30)
    # The grace period, then the engine's own shutdown (~5 s).
    assert took < GRACE + 20
    assert "draining" in lab.log()
    # The stream was ended by the lab before uvicorn's deadline, with its reason.
    assert events[-1] == "data: [DONE]", events[-3:]
    error = json.loads(events[-2][6:])["error"]
    assert error["code"] == "generation_interrupted" and "stopping" in error["message"]
    assert len(events) < 1000
