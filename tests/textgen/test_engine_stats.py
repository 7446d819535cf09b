"""vLLM's own metrics of an engine, read alike from an in-process registry and from a remote
server's /metrics, and the vLLM internals the in-process reading builds on."""

from __future__ import annotations

import inspect
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from textgen import engine_stats
from textgen.engine_stats import EngineReading
from textgen.engines.endpoint import Endpoint
from textgen.engines.load import server_load
from textgen.engines.remote import RemoteServer

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

# A vLLM server's /metrics as vLLM 0.32 writes it (trimmed), with two data-parallel engines.
METRICS = f"""\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} 3.0
vllm:num_requests_running{{engine="1",model_name="{MODEL}"}} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="{MODEL}"}} 1.0
vllm:num_requests_waiting{{engine="1",model_name="{MODEL}"}} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="{MODEL}"}} 0.5
vllm:kv_cache_usage_perc{{engine="1",model_name="{MODEL}"}} 0.25
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{{engine="0",model_name="{MODEL}"}} 2880.0
vllm:prefix_cache_queries_created{{engine="0",model_name="{MODEL}"}} 1.7e9
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{{engine="0",model_name="{MODEL}"}} 1920.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{{engine="0",model_name="{MODEL}"}} 640.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.1",model_name="{MODEL}"}} 3.0
vllm:time_to_first_token_seconds_bucket{{engine="0",le="+Inf",model_name="{MODEL}"}} 4.0
vllm:time_to_first_token_seconds_count{{engine="0",model_name="{MODEL}"}} 4.0
vllm:time_to_first_token_seconds_sum{{engine="0",model_name="{MODEL}"}} 0.8
# HELP vllm:request_time_per_output_token_seconds Histogram of time_per_output_token_seconds per request.
# TYPE vllm:request_time_per_output_token_seconds histogram
vllm:request_time_per_output_token_seconds_count{{engine="0",model_name="{MODEL}"}} 4.0
vllm:request_time_per_output_token_seconds_sum{{engine="0",model_name="{MODEL}"}} 0.2
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{{block_size="16",engine="0"}} 1.0
"""


def test_a_metrics_page_becomes_one_reading_per_model() -> None:
    [reading] = [r for r in engine_stats.readings(text_string_to_metric_families(METRICS),
                                                  "http://gpu-box:8000", now=100.0) if r.model == MODEL]
    assert reading.source == "http://gpu-box:8000" and reading.time == 100.0
    assert (reading.running, reading.waiting) == (5.0, 1.0)  # summed over the engines
    assert reading.kv_cache_usage == 0.375  # a share: averaged over the engines
    assert (reading.prefix_cache_queries, reading.prefix_cache_hits) == (2880.0, 1920.0)
    assert reading.generation_tokens == 640.0
    assert (reading.ttft_sum, reading.ttft_count) == (0.8, 4.0)
    assert (reading.tpot_sum, reading.tpot_count) == (0.2, 4.0)


def test_an_in_process_registry_reads_the_same_as_its_metrics_page() -> None:
    registry = CollectorRegistry()
    running = Gauge("vllm:num_requests_running", "running", ["model_name", "engine"], registry=registry)
    running.labels(MODEL, "0").set(2)
    from_registry = engine_stats.local_readings(registry, now=1.0)
    from_page = engine_stats.readings(
        text_string_to_metric_families(generate_latest(registry).decode()), "in-process", now=1.0)
    assert from_registry == from_page
    assert from_registry[0].running == 2.0


def test_rates_between_two_readings() -> None:
    before = EngineReading(MODEL, "in-process", time=10.0, prefix_cache_queries=100,
                           prefix_cache_hits=50, generation_tokens=200, ttft_sum=1.0, ttft_count=10,
                           tpot_sum=0.5, tpot_count=10)
    after = EngineReading(MODEL, "in-process", time=12.0, prefix_cache_queries=300,
                          prefix_cache_hits=200, generation_tokens=300, ttft_sum=1.6, ttft_count=12,
                          tpot_sum=0.5, tpot_count=10)
    rates = engine_stats.rates(before, after)
    assert rates.prefix_cache_hit_rate == 0.75  # 150 of 200 looked-up tokens
    assert rates.ttft == pytest.approx(0.3)  # two requests, 0.6 s between them
    assert rates.tpot is None  # no request finished in between
    assert rates.tokens_per_second == 50.0
    assert engine_stats.rates(after, after).prefix_cache_hit_rate is None


def test_adopted_metrics_survive_the_next_engines_clean_up_of_the_global_registry() -> None:
    from vllm.v1.metrics.prometheus import unregister_vllm_metrics

    first, second = CollectorRegistry(), CollectorRegistry()
    gauges = {}

    def engine(registry_name: str) -> None:
        unregister_vllm_metrics()  # what each PrometheusStatLogger does first
        gauges[registry_name] = Gauge("vllm:num_requests_running", "running", ["model_name"])
        gauges[registry_name].labels(registry_name).set(1)

    engine_stats.adopt(first, lambda: engine("first"))
    engine_stats.adopt(second, lambda: engine("second"))
    assert [r.model for r in engine_stats.local_readings(first)] == ["first"]
    assert [r.model for r in engine_stats.local_readings(second)] == ["second"]
    assert not any(name.startswith("vllm:") for name in REGISTRY._names_to_collectors)


def test_the_vllm_internals_the_in_process_reading_builds_on() -> None:
    """vLLM moves these between releases: fail here, by name, before an engine test runs."""
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.metrics import loggers
    from vllm.v1.metrics.loggers import PrometheusStatLogger, StatLoggerManager

    assert "stat_loggers" in inspect.signature(AsyncLLM.from_engine_args).parameters
    # A custom Prometheus logger replaces vLLM's default one instead of joining it.
    assert "custom_prometheus_logger" in inspect.getsource(StatLoggerManager.__init__)
    assert hasattr(PrometheusStatLogger, "log_engine_initialized")
    source = inspect.getsource(loggers)
    for name in [*engine_stats.GAUGES, *engine_stats.COUNTERS, *engine_stats.HISTOGRAMS]:
        assert f'name="{name}"' in source, f"vLLM no longer has the metric {name}"
    assert hasattr(REGISTRY, "_collector_to_names")  # prometheus_client's, read by adopt()


async def test_a_remote_server_is_read_at_its_address_with_its_host_and_credentials() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=METRICS)

    endpoint = Endpoint.parse("http://vllm.internal:8000", api_key="k")
    server = RemoteServer(endpoint, "10.0.0.7", transport=httpx.MockTransport(answer))
    server.models = (MODEL,)
    [reading] = await engine_stats.remote_readings(server)
    assert str(seen[0].url) == "http://10.0.0.7:8000/metrics"
    assert seen[0].headers["host"] == "vllm.internal:8000"
    assert seen[0].headers["authorization"] == "Bearer k"
    assert reading.source == "http://10.0.0.7:8000" and reading.running == 5.0


@pytest.mark.parametrize(("answer", "reason"), [
    (lambda r: httpx.Response(404), "HTTPStatusError"),
    (lambda r: httpx.Response(200, text="vllm:num_requests_running{ 1\n"), "ValueError"),
])
async def test_an_unreadable_server_says_so_for_each_of_its_models(answer: Any,
                                                                     reason: str) -> None:
    server = RemoteServer("http://gpu-box:8000", transport=httpx.MockTransport(answer))
    server.models = ("a", "b")
    readings = await engine_stats.remote_readings(server)
    assert [(r.model, r.error) for r in readings] == [
        ("a", f"/metrics unreadable ({reason})"), ("b", f"/metrics unreadable ({reason})")]


def test_the_parsed_page_reads_as_the_whole_page_does() -> None:
    """`parse_metrics` hands prometheus_client only the lines read (a speed-up): nothing the
    readings use may be lost."""
    whole = engine_stats.readings(text_string_to_metric_families(METRICS), "x", now=1.0)
    assert engine_stats.readings(engine_stats.parse_metrics(METRICS.encode()), "x",
                                 now=1.0) == whole


def test_the_routing_load_and_the_panel_read_one_parse_of_the_page() -> None:
    families = engine_stats.parse_metrics(METRICS.encode())
    load = server_load(families, ours=2, read_at=1.0)
    assert (load.running, load.waiting, load.foreign()) == (5.0, 1.0, 4)
    # A share of each engine's cache: averaged over the engines, as the panel shows it.
    assert load.kv_cache_usage == 0.375
    assert (load.prefix_cache_queries, load.prefix_cache_hits) == (2880.0, 1920.0)
    assert load.prefix_cache_hit_rate() == 0.6667
    [reading] = [r for r in engine_stats.readings(families, "x") if r.model == MODEL]
    assert (reading.running, reading.kv_cache_usage) == (5.0, 0.375)  # the same parse, reused
    assert server_load(engine_stats.parse_metrics(b"# nothing of vLLM's\n")).foreign() == 0


def test_a_restarted_engine_counts_from_zero_again() -> None:
    before = EngineReading(MODEL, "in-process", time=10.0, prefix_cache_queries=900,
                           prefix_cache_hits=600, ttft_sum=9.0, ttft_count=90)
    after = EngineReading(MODEL, "in-process", time=12.0, prefix_cache_queries=100,
                          prefix_cache_hits=10, ttft_sum=0.2, ttft_count=2)
    rates = engine_stats.rates(before, after)
    assert rates.prefix_cache_hit_rate == 0.1 and rates.ttft == pytest.approx(0.1)
