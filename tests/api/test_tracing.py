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


async def test_spans_go_to_the_collector_only_when_an_endpoint_is_set(
        otlp: FakeCollector, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.fake_engines import FakeStarter
    from textgen import OpenAIRequest, Settings, TextGen

    model = "local/traced"
    for endpoint in (None, otlp.url):
        starter = FakeStarter()
        settings = Settings(MODEL=model, MODEL_PATHS={model: tmp_path}, VLLM_ENDPOINT="",
                            METRICS_PORT=0, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
        tg = TextGen(settings, engine_starter=starter.start)
        await tg.start()
        tag = uuid.uuid4().hex
        await tg.complete(OpenAIRequest.completion(model=model, prompt=tag))
        await tg.close()  # flushes the exporter
        with otlp.lock:
            mine = [s for s in otlp.spans if s.name == "textgen.request"
                    and s.attributes.get("model") == model]
        assert len(mine) == (0 if endpoint is None else 1), endpoint


def test_no_spans_at_all_without_an_endpoint() -> None:
    from textgen.tracing import NULL_TRACE

    assert Tracing(None).request("m") is NULL_TRACE
