"""vLLM's own OpenAI server, the oracle the API tests compare the lab with."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.upstreams import VllmServer


@pytest.fixture(scope="package")
def vllm() -> Iterator[VllmServer]:
    """One real vLLM server for every test under tests/api that asks for it (~3 GB, ~30 s)."""
    server = VllmServer.shared()
    yield server
    # With this package, not at the end of the session: ~3 GB and an idle engine's CPU freed
    # for the tests that follow (the browser tests are sensitive to a busy machine).
    server.stop()
