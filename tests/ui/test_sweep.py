"""The benchmark tab's arithmetic: plans, `vllm bench serve`'s figures per level, plots, CSV."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from ui import sweep
from ui.sweep import Measured


def test_concurrencies_are_parsed_sorted_and_bounded() -> None:
    assert sweep.concurrencies("1, 2, 4 8;16", 64) == [1, 2, 4, 8, 16]
    assert sweep.concurrencies("4,1,4", 64) == [1, 4]
    for text, message in [("", "List the concurrencies"), ("1, two", "'two' is not a whole"),
                          ("0", "outside 1-64"), ("65", "MAX_CONCURRENT_REQUESTS"),
                          (",".join(str(i) for i in range(1, 14)), "At most 12")]:
        with pytest.raises(ValueError, match=message):
            sweep.concurrencies(text, 64)


def test_a_plan_sends_whole_batches_at_each_level() -> None:
    assert sweep.plan([1, 2, 4], 3) == [(1, 3), (2, 6), (4, 12)]
    assert sweep.plan([2], 0) == [(2, 2)]


def test_a_level_row_is_computed_as_vllm_bench_serve_computes_it() -> None:
    # Two requests at once: 0-2 s and 0.5-3 s; 10 and 20 output tokens.
    results = [
        Measured(started=0.0, ended=2.0, ttft=0.2, itl=(0.1, 0.3), output_tokens=10),
        Measured(started=0.5, ended=3.0, ttft=0.4, itl=(0.2,), output_tokens=20),
    ]
    row = sweep.level_row(2, results)
    assert row["concurrency"] == 2 and row["requests"] == 2 and row["failed"] == 0
    assert row["duration s"] == 3.0  # first sent to last finished
    assert row["output tok/s"] == 10.0  # 30 tokens / 3 s
    assert row["requests/s"] == pytest.approx(0.667)
    assert row["TTFT p50 ms"] == 300.0
    assert row["TTFT p95 ms"] == pytest.approx(float(np.percentile([200, 400], 95)), abs=0.05)
    assert row["ITL p50 ms"] == 200.0  # every gap of every request, pooled
    assert row["ITL p95 ms"] == pytest.approx(float(np.percentile([100, 300, 200], 95)), abs=0.05)


def test_failed_requests_count_in_the_duration_not_in_the_figures() -> None:
    results = [Measured(0.0, 1.0, 0.1, (0.05,), 8), Measured(0.0, 4.0, error="refused")]
    row = sweep.level_row(2, results)
    assert (row["requests"], row["failed"], row["duration s"]) == (1, 1, 4.0)
    assert row["output tok/s"] == 2.0


def test_a_level_where_everything_failed_draws_no_points() -> None:
    row = sweep.level_row(1, [Measured(0.0, 1.0, error="boom")])
    assert row["requests"] == 0 and math.isnan(row["TTFT p50 ms"])
    assert sweep.plot_frame([row], "ttft").empty


def test_plots_have_one_point_per_level_and_series() -> None:
    rows = [sweep.level_row(c, [Measured(0.0, 1.0, 0.1 * c, (0.02, 0.03), 10 * c)]) for c in (1, 2)]
    ttft = sweep.plot_frame(rows, "ttft")
    assert list(ttft.columns) == ["concurrency", "series", "value"]
    assert sorted(ttft["series"].unique()) == ["p50", "p95"]
    assert ttft[ttft["series"] == "p50"]["value"].tolist() == [100.0, 200.0]
    assert sweep.plot_frame(rows, "throughput")["value"].tolist() == [10.0, 20.0]
    assert sweep.plot_frame([], "itl").empty


def test_the_csv_has_every_figure_and_what_it_ran_on() -> None:
    rows = [sweep.level_row(1, [Measured(0.0, 1.0, 0.1, (0.02,), 10)])]
    about = {"model": "m", "dtype": "bfloat16", "device": "CPU: x (2 cores), no GPU"}
    parsed = list(csv.DictReader(io.StringIO(sweep.csv_text(rows, about))))
    assert len(parsed) == 1
    assert parsed[0]["output tok/s"] == "10.0" and parsed[0]["device"] == about["device"]
    assert list(parsed[0]) == [*sweep.COLUMNS, "model", "dtype", "device"]
