"""Real processes the tests run against: redis-server and the lab's own `textgen serve`."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
TEXTGEN = Path(sys.executable).with_name("textgen")


def die_with_pytest() -> Callable[[], None] | None:
    """A Popen preexec_fn by which the child gets SIGTERM when pytest dies.

    A test run killed outright (the OOM killer, a CI timeout) runs no fixture teardown: without
    this its servers and their 3 GB engines outlive it and starve the next run of memory. The
    kernel sends the signal when the thread that started the child ends, so only a child
    started from pytest's main thread gets it (None from any other thread).
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def ask_for_sigterm() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return ask_for_sigterm


_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on a free port (Debian's `redis-server`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: `make test` installs it (apt-get)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_pytest(),
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_port(port, 10)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


INSTANT_MODEL = "bench/instant-7b"


@contextmanager
def instant_upstream() -> Iterator[str]:
    """benchmarks/instant_upstream.py on a free port: a fake OpenAI server that answers at once.

    For tests of what the lab does around generation (limits, admission) in labs that have no
    engine of their own; it serves the model INSTANT_MODEL.
    """
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "instant_upstream.py"),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, 10)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


class LabServer:
    """A running `textgen serve` process."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, metrics_port: int,
                 token: str | None, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.metrics_port = metrics_port
        self.token = token
        self.log_path = log_path
        self.base_url = f"http://127.0.0.1:{port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def in_own_autogroup(niceness: int, then: Callable[[], None] | None) -> Callable[[], None]:
    """A Popen preexec_fn: the child starts a session of its own, whose scheduling group (Linux's
    autogroup) gets `niceness`; then `then`.

    Where the kernel groups processes by session (sched_autogroup_enabled, the default of most
    distributions and of these machines), a nice value orders a process only against the others
    of its session: an engine at nice 19 started from pytest's session still got as much CPU as
    headless Chromium, which Playwright starts in a session of its own. In a full run the
    engine's two busy processes then took 1.8 of the 2 cores for minutes and the page (5%) fell
    minutes behind a stream. The group's own nice value is what orders it against Chromium's.
    """
    def preexec() -> None:
        os.setsid()
        with contextlib.suppress(OSError):  # no autogroups (disabled, or not Linux): as before
            Path("/proc/self/autogroup").write_text(str(niceness))
        if then is not None:
            then()

    return preexec


@contextmanager
def lab_server(env: dict[str, str], *, token: str | None = "test-token",
               wait_model: str | None = None, timeout: float = 300,
               niceness: int = 0, group_niceness: int | None = None) -> Iterator[LabServer]:
    """Start `textgen serve` with the given settings and wait until it (and a model) is ready.

    `niceness` lowers the CPU priority of the lab and its engine processes, for tests whose
    other side (a browser) must not starve while the engine generates on the same cores.
    `group_niceness` starts the lab in a session of its own whose scheduling group has that
    nice value (`in_own_autogroup`): what orders it against a browser in another session.
    """
    port, metrics_port = free_port(), free_port()
    full_env = {
        **os.environ,
        "API_PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "METRICS_HOST": "127.0.0.1",
        "VLLM_ENDPOINT": "",
        "LOG_LEVEL": "INFO",
        **env,
    }
    if token:
        full_env["API_TOKEN"] = token
    log_dir = ROOT / "test-artifacts"
    log_dir.mkdir(exist_ok=True)
    log_path = log_dir / f"lab-{port}.log"
    with log_path.open("wb") as log:
        preexec = die_with_pytest()
        if group_niceness is not None:
            preexec = in_own_autogroup(group_niceness, preexec)
        proc = subprocess.Popen(["nice", "-n", str(niceness), str(TEXTGEN), "serve"],
                                env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                preexec_fn=preexec)
    server = LabServer(proc, port, metrics_port, token, log_path)
    try:
        _wait_ready(server, wait_model, timeout)
        yield server
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM `textgen serve` as a service manager does; it must exit, engines and all.

    A server that needs SIGKILL, or leaves an engine process behind, is a bug: the orphaned
    vLLM engine core keeps a CPU and its memory for as long as the machine runs.
    """
    children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
    proc.terminate()
    try:
        proc.wait(grace)
        killed = False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        killed = True
    _, alive = psutil.wait_procs(children, timeout=15)
    left = []
    for child in alive:
        with contextlib.suppress(psutil.Error):
            left.append(child.name())
            child.kill()
    # (After its clean shutdown uvicorn re-raises the SIGTERM, so the exit status is -15.)
    assert not killed, f"textgen serve did not stop within {grace:.0f} s of SIGTERM"
    assert not left, f"textgen serve left {left} behind"


def _wait_ready(server: LabServer, model: str | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"textgen serve exited early:\n{server.log()[-4000:]}")
        try:
            health = httpx.get(server.base_url + "/health", timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.3)
            continue
        state = health["components"]["models"].get(model) if model else "loaded"
        if state == "loaded":
            return
        if state == "error":
            raise RuntimeError(f"model {model} failed to load:\n{server.log()[-4000:]}")
        time.sleep(0.5)
    raise RuntimeError(f"textgen serve not ready after {timeout} s:\n{server.log()[-4000:]}")
