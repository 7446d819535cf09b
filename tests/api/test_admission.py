"""Admission through the API: the rate limit, and what is checked before it is charged.

The lab here has no engine of its own: a fake upstream (benchmarks/instant_upstream.py, an
OpenAI server that answers at once) serves INSTANT_MODEL, so the limiter is what is tested.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from api.app import create_app
from tests.support.processes import INSTANT_MODEL, instant_upstream
from textgen import DEFAULT_MODEL, Settings, TextGen


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with instant_upstream() as url:
        yield url


@pytest.fixture
async def lab(upstream: str) -> AsyncIterator[tuple[httpx.AsyncClient, TextGen]]:
    settings = Settings(MODEL="", VLLM_ENDPOINT=upstream, METRICS_PORT=0,
                        RATE_LIMITS={INSTANT_MODEL: 3, DEFAULT_MODEL: 3})
    app = create_app(settings, ui=False)
    textgen: TextGen = app.state.textgen
    async with app.router.lifespan_context(app):
        await textgen.backends.wait_discovered()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lab") as client:
            yield client, textgen


async def test_rate_limit_refusal_is_429_with_openai_headers(lab) -> None:
    client, _ = lab
    responses = [await client.post("/v1/completions", json={"model": INSTANT_MODEL,
                                                             "prompt": f"rate me {i}"})
                 for i in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses[:3]] == ["2", "1", "0"]
    refused = responses[-1]
    assert refused.headers["x-ratelimit-limit-requests"] == "3"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


async def test_a_request_refused_for_readiness_does_not_spend_quota(lab) -> None:
    """A client that honours a 503's Retry-After keeps its quota for when the model is ready."""
    client, textgen = lab
    for _ in range(5):
        r = await client.post("/v1/completions", json={"model": DEFAULT_MODEL, "prompt": "x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
        assert "Retry-After" in r.headers and "x-ratelimit-remaining-requests" not in r.headers
    # Nothing was charged: the window is still empty.
    decision = await textgen.limiter.hit(DEFAULT_MODEL, 3)
    assert decision.admitted and decision.remaining == 2


async def test_cache_hits_are_not_charged(lab) -> None:
    client, _ = lab
    body = {"model": INSTANT_MODEL, "prompt": "same"}
    first = await client.post("/v1/completions", json=body)
    hits = [await client.post("/v1/completions", json=body) for _ in range(5)]
    assert first.headers["X-Cache"] == "MISS" and {h.headers["X-Cache"] for h in hits} == {"HIT"}
    assert all(h.status_code == 200 for h in hits)
    assert (await client.post("/v1/completions", json={**body, "prompt": "new"})).status_code == 200
