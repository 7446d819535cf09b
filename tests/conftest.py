"""Session-wide real services: one Redis and one lab server with the real engine.

One engine start costs ~20-60 s and ~3 GB, so every engine-backed test shares `lab`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.otlp_collector import FakeCollector, fake_collector
from tests.support.postgres import PostgresServer, postgres_server
from tests.support.processes import LabServer, lab_server, redis_server
from textgen import DEFAULT_MODEL


@pytest.fixture(scope="session", autouse=True)
def lab_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The labs and TextGens of a test session keep their runs in a folder of the session's,
    not in the user's data directory (LAB_DATA_DIR is read by every Settings made after)."""
    folder = tmp_path_factory.mktemp("lab-data")
    os.environ["LAB_DATA_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of our own on a free port (Debian's `postgresql`), shared by the session."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL when the caller gives one, else a redis-server of our own on a free port."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def otlp() -> Iterator[FakeCollector]:
    with fake_collector() as collector:
        yield collector


@pytest.fixture(scope="session")
def lab(redis_url: str, otlp: FakeCollector) -> Iterator[LabServer]:
    """`textgen serve` with the default model on vLLM, Redis cache and a bearer token."""
    env = {
        "REDIS_URL": redis_url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        # Tests send hundreds of requests: a high limit keeps the headers without refusals.
        "RATE_LIMITS": json.dumps({DEFAULT_MODEL: 100000}),
        "TEXT_GEN_API_TOKEN": "second-token",
        # Configured as vLLM's server in the parity tests (tests/support/upstreams.py): float32,
        # so two engines on one machine agree to the last logprob digits that matter, and no
        # prefix cache (vLLM 0.32 fails a streamed echo + logprobs + n > 1 request when a
        # choice's prompt comes from it: KeyError in its own logprobs code, on both servers).
        "DTYPE": "float32",
        # vLLM's Responses store, so GET /v1/responses/{id} has something to find.
        "VLLM_ENABLE_RESPONSES_API_STORE": "1",
        "VLLM_SERVE_ARGS": json.dumps({DEFAULT_MODEL: "--enable-auto-tool-choice "
                                       "--tool-call-parser hermes --no-enable-prefix-caching"}),
    }
    with lab_server(env, token="test-token", wait_model=DEFAULT_MODEL) as server:
        yield server
