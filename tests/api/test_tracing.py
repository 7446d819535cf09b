"""OpenTelemetry: one trace per request with cache, limit and generation spans, over OTLP."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.support.otlp_collector import FakeCollector
from tests.support.processes import LabServer
from textgen import DEFAULT_MODEL
from textgen.tracing import Tracing


@pytest.mark.engine
def test_request_trace_reaches_the_collector(lab: LabServer, otlp: FakeCollector) -> None:
    prompt = f"[{uuid.uuid4().hex[:8]}] trace me"
    r = httpx.post(lab.base_url + "/v1/completions", headers=lab.headers, timeout=60,
                   json={"model": DEFAULT_MODEL, "prompt": prompt, "max_tokens": 4})
    assert r.status_code == 200
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with otlp.lock:
            roots = [s for s in otlp.spans if s.name == "textgen.request" and not s.parent_span_id
                     and s.attributes.get("cache") == "MISS"]
        if roots:
            break
        time.sleep(0.2)
    assert roots, "no request span arrived"
    root = roots[-1]
    with otlp.lock:
        children = {s.name for s in otlp.spans
                    if s.trace_id == root.trace_id and s.parent_span_id == root.span_id}
    assert {"cache.lookup", "rate_limit", "generation"} <= children
    with otlp.lock:
        assert all(prompt not in str(s.attributes) and lab.token not in str(s.attributes)
                   for s in otlp.spans)


def test_tracing_is_a_no_op_without_an_endpoint() -> None:
    tracing = Tracing(None)
    span = tracing.tracer.start_span("x")
    assert not span.is_recording()
    tracing.shutdown()


def test_no_spans_at_all_without_an_endpoint() -> None:
    from textgen.tracing import NULL_TRACE

    assert Tracing(None).request("m") is NULL_TRACE
