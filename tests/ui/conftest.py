"""A running lab for the browser test: `textgen serve` with the real engine, on a free port."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.support.processes import lab_server
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


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """A lab of the UI tests' own: they unload and reload its model and count its stopped
    requests, which the API tests' shared `lab` (tests/conftest.py) must not see."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(16)
    # While it generates, the engine takes what the two cores give, and the browser on the
    # same cores fell seconds behind the stream (a user's browser does not share the engine's
    # cores): the engine's processes, and only they, run at the lowest priority. (The whole
    # lab at nice 19, web server included, froze the page for a minute whenever anything else
    # on the machine was busy: benchmarks/RESULTS.md.)
    # LoRA on (rank 8, one adapter at a time): the browser test of an adapter loads its own
    # at run time, without a second engine on these two cores.
    # The model's whole context (8192, not the lab's default 2048): a generation the Stop tests
    # press on runs 8000 tokens, minutes, so it outlasts any page that falls behind.
    env = {"REDIS_URL": "", "TEXT_GEN_API_TOKEN": "", "METRICS_PORT": "0",
           "ENGINE_NICENESS": "19", "ENABLE_LORA": "true", "MAX_LORA_RANK": "8", "MAX_LORAS": "1",
           "MAX_MODEL_LEN": "8192"}
    # And the lab in a scheduling group of its own at nice 19 (in_own_autogroup): the engine's
    # nice value alone orders it only against the lab's web server, not against Chromium.
    with lab_server(env, token=token, wait_model=DEFAULT_MODEL, timeout=LOAD_TIMEOUT,
                    group_niceness=19) as server:
        lab_process = psutil.Process(server.proc.pid)
        engine = [p for p in lab_process.children(recursive=True) if p.name().startswith("VLLM")]
        assert engine and {p.nice() for p in engine} == {19}, [(p.name(), p.nice()) for p in engine]
        assert lab_process.nice() == psutil.Process().nice()  # the web server keeps its priority
        yield Lab(url=server.base_url, token=token, log=server.log_path)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless Chromium driven by Playwright (never a downloaded browser).

    Module-scoped: Playwright's sync API holds an event loop on this thread while it runs,
    which the async tests of later modules could not share.
    """
    executable = Path("/usr/bin/chromium")
    if not executable.exists():
        # `make test` installs it; CI must not go green on a skipped browser test.
        missing = "Debian chromium is not installed (apt-get install -y chromium, or make system-deps)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright import sync_api  # a test dependency: its absence is a broken install
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


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Keep each phase's report on the test item, so a fixture can see that its test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report

