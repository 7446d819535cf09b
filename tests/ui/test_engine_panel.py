"""The engine panel's frames and figures from a history of vLLM readings."""

from __future__ import annotations

from textgen.engine_stats import EngineReading
from ui.engine_panel import (
    EngineHistory,
    kv_cache_frame,
    latency_frame,
    prefix_hit_frame,
    requests_frame,
    summary,
)

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _reading(t: float, source: str = "in-process", **values: float) -> EngineReading:
    return EngineReading(MODEL, source, time=t, **values)  # type: ignore[arg-type]


def _history() -> EngineHistory:
    history = EngineHistory()
    history.add([_reading(100.0)])
    history.add([_reading(102.0, running=2, waiting=1, kv_cache_usage=0.004,
                          prefix_cache_queries=200, prefix_cache_hits=50,
                          ttft_sum=0.3, ttft_count=2, tpot_sum=0.1, tpot_count=2)])
    history.add([_reading(104.0, "http://gpu:8000", running=1, kv_cache_usage=0.5)])
    return history


def test_readings_closer_than_a_second_are_not_taken_again() -> None:
    history = _history()
    assert not history.due(104.5) and history.due(105.0)


def test_engines_are_named_by_model_and_where_remote_ones_run() -> None:
    assert set(_history().engines()) == {"SmolLM2-135M-Instruct",
                                        "SmolLM2-135M-Instruct @ http://gpu:8000"}


def test_series_per_engine() -> None:
    engines = _history().engines()
    requests = requests_frame(engines, 0)
    local = requests[requests["series"] == "SmolLM2-135M-Instruct · running"]
    assert local["value"].tolist() == [0.0, 2.0]
    kv = kv_cache_frame(engines, 101.0)  # the window drops the first reading
    assert sorted(kv["value"].tolist()) == [0.4, 50.0]
    hits = prefix_hit_frame(engines, 0)
    assert hits["value"].tolist() == [25.0]  # 50 of 200 tokens in the interval
    latency = latency_frame(engines, 0)
    assert dict(zip(latency["series"], latency["value"], strict=True)) == {
        "SmolLM2-135M-Instruct · TTFT": 150.0, "SmolLM2-135M-Instruct · TPOT": 50.0}


def test_summary_keeps_a_small_kv_cache_share_visible_and_says_when_a_server_is_unreadable() -> None:
    history = _history()
    history.add([EngineReading(MODEL, "http://gpu:8000", time=106.0, error="/metrics unreadable")])
    figures = summary(history.engines())
    assert figures["SmolLM2-135M-Instruct · KV cache"] == "0.40 %"
    assert figures["SmolLM2-135M-Instruct · running"] == "2"
    assert figures["SmolLM2-135M-Instruct · prefix-cache hits"] == "25 %"
    assert figures["SmolLM2-135M-Instruct · TTFT"] == "150 ms"
    assert figures["SmolLM2-135M-Instruct @ http://gpu:8000"] == "/metrics unreadable"
    # An unreadable reading is left out of the plots rather than drawn as an idle engine.
    assert len(requests_frame(history.engines(), 0)) == 6
