"""A running lab for the browser test: `textgen serve` with the real engine, on a free port."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from textgen import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
# Engine start is ~20 s on an idle 2-core machine; conversion of the model on first use and
# other engines on the same cores can make it several times that.
LOAD_TIMEOUT = 420.0


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    log: Path
    load_timeout: float = LOAD_TIMEOUT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("textgen")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]
    return [*base, "serve", "--host", "127.0.0.1", "--port", str(port)]


def _wait_loaded(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT
    state = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"textgen serve exited ({process.returncode}); see {log}")
        try:
            health = httpx.get(f"{url}/health", timeout=5).json()
            state = health["components"]["models"].get(DEFAULT_MODEL, "absent")
        except (httpx.HTTPError, ValueError, KeyError):
            state = "no answer"
        if state == "loaded":
            return
        if state == "error":
            raise RuntimeError(f"{DEFAULT_MODEL} failed to load; see {log}")
        time.sleep(1.0)
    raise TimeoutError(f"{DEFAULT_MODEL} not loaded after {LOAD_TIMEOUT:.0f} s ({state}); see {log}")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """`textgen serve` with the in-process engine and an API token, until the session ends."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    token = secrets.token_urlsafe(16)
    log = ARTIFACTS / "lab.log"
    env = {**os.environ, "VLLM_ENDPOINT": "", "METRICS_PORT": "0", "API_TOKEN": token,
           "REDIS_URL": "", "TEXT_GEN_API_TOKEN": ""}
    with log.open("wb") as out:
        process = subprocess.Popen(_command(port), cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_loaded(url, process, log)
        yield Lab(url=url, token=token, log=log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # uvicorn's graceful stop: the lifespan closes vLLM
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium driven by Playwright (never a downloaded browser).

    Module-scoped: Playwright's sync API holds an event loop on this thread while it runs,
    which the async tests of later modules could not share.
    """
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = Path("/usr/bin/chromium")
    if not executable.exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(executable),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            yield chromium
        finally:
            chromium.close()
