"""The Dashboards tab: the machine (CPU, RAM, GPUs) and the requests, redrawn on a timer."""

from __future__ import annotations

import html
import time

import gradio as gr
import pandas as pd

from textgen import TextGen

from .. import dashboards, engine_panel
from ..engine_panel import EngineHistory

LATENCY, CACHE = "Latency percentiles", "Cache hit rate"
PREFIX, ENGINE_LATENCY = "Prefix-cache hit rate", "Mean TTFT and time per output token"

PANEL_CSS = """
.summary { display: flex; flex-wrap: wrap; gap: 8px; }
.summary div { border: 1px solid var(--border-color-primary); border-radius: 8px;
  padding: 6px 12px; background: var(--background-fill-secondary); min-width: 110px; }
.summary small { display: block; color: var(--body-text-color-subdued); }
.summary b { font-size: 1.15em; }
.notice { border: 1px dashed var(--border-color-primary); border-radius: 8px; padding: 28px;
  text-align: center; color: var(--body-text-color-subdued); font-size: 1.1em; }
"""


def summary_html(figures: dict[str, str]) -> str:
    cells = "".join(f'<div data-figure="{html.escape(k)}"><small>{html.escape(k)}</small>'
                    f"<b>{html.escape(v)}</b></div>" for k, v in figures.items())
    return f'<div class="summary">{cells}</div>'


def notice_html(text: str) -> str:
    return f'<div class="notice" id="gpu-notice">{html.escape(text)}</div>'


def _plot(title: str, y_title: str, color: str = "series", **kwargs: object) -> gr.LinePlot:
    return gr.LinePlot(x="time", y="value", color=color, title=title, x_title=" ", y_title=y_title,
                       color_title=" ", x_axis_format="%H:%M:%S", y_axis_format="~r", height=230,
                       label=title, show_label=False, **kwargs)


def build(demo: gr.Blocks, textgen: TextGen, tab: gr.Tab, engines: EngineHistory) -> gr.Timer:
    """Lay out the tab inside the current Blocks context; returns its (inactive) timer."""
    with gr.Row(equal_height=True):
        summary = gr.HTML(css_template=PANEL_CSS, js_on_load=None, elem_id="dash-summary")
        window = gr.Radio(list(dashboards.WINDOWS), value=dashboards.DEFAULT_WINDOW,
                          label="Window", scale=0, min_width=230, elem_id="dash-window")
    gr.Markdown("#### Machine")
    with gr.Row():
        cpu = _plot("CPU", "%", y_lim=[0, 100], elem_id="dash-cpu")
        memory = _plot("Memory", "GiB", elem_id="dash-memory")
    gr.Markdown("#### GPUs")
    gpu_notice = gr.HTML(css_template=PANEL_CSS, js_on_load=None, visible=False, elem_id="dash-gpu-notice")
    with gr.Row(visible=False) as gpu_row_1:
        gpu_util = _plot("GPU utilisation", "%", color="gpu", y_lim=[0, 100], elem_id="dash-gpu-util")
        gpu_mem = _plot("GPU memory", "GiB", color="gpu", elem_id="dash-gpu-memory")
    with gr.Row(visible=False) as gpu_row_2:
        gpu_temp = _plot("GPU temperature", "°C", color="gpu", elem_id="dash-gpu-temperature")
        gpu_power = _plot("GPU power", "W", color="gpu", elem_id="dash-gpu-power")
    gr.Markdown("#### Engines — vLLM's own metrics", elem_id="dash-engines-title")
    engine_summary = gr.HTML(css_template=PANEL_CSS, js_on_load=None, elem_id="dash-engine-summary")
    with gr.Row():
        engine_requests = _plot("Engine requests", "requests", elem_id="dash-engine-requests")
        engine_kv = _plot("KV-cache usage", "%", elem_id="dash-engine-kv")
    with gr.Row():
        engine_prefix = _plot(PREFIX, "%", y_lim=[0, 100], elem_id="dash-engine-prefix")
        engine_latency = _plot(ENGINE_LATENCY, "ms", elem_id="dash-engine-latency")
    gr.Markdown("#### Requests")
    with gr.Row():
        rate = _plot("Request rate", "req/min", elem_id="dash-rate")
        latency = _plot(LATENCY, "s", elem_id="dash-latency")
    with gr.Row():
        throughput = _plot("Completion tokens/s", "tokens/s", elem_id="dash-throughput")
        hits = _plot(CACHE, "%", y_lim=[0, 100], elem_id="dash-cache")

    def draw(window_name: str):
        seconds = dashboards.WINDOWS.get(window_name, dashboards.WINDOWS[dashboards.DEFAULT_WINDOW])
        t = textgen.telemetry
        now = pd.Timestamp(time.time(), unit="s")
        board = dashboards.build(
            t.system_frame(), t.gpu_frame(), textgen.requests_frame(),
            gpu_error=None if t.gpu.available else (t.gpu.error or ""),
            now=now, window=seconds,
            in_flight=sum(e.active for e in textgen.models.loaded()),
        )
        # Every panel spans the whole window, so their time axes line up (epoch seconds: Gradio
        # scales a temporal x_lim to milliseconds itself).
        span = [(now - pd.Timedelta(seconds=seconds)).timestamp(), now.timestamp()]

        def plot(frame: pd.DataFrame | None, title: str | None = None, empty: str = "") -> gr.LinePlot:
            if title and frame is not None and frame.empty:
                title = f"{title} — {empty}"  # say why the panel is blank
            return gr.LinePlot(value=frame, x_lim=span, **({"title": title} if title else {}))

        has_gpu = board.gpu_notice is None
        gpu = board.gpu
        return (
            summary_html(board.summary),
            plot(board.cpu), plot(board.memory),
            gr.HTML(notice_html(board.gpu_notice or ""), visible=not has_gpu),
            gr.Row(visible=has_gpu), gr.Row(visible=has_gpu),
            *(plot(gpu.get(metric)) for metric in ("utilization", "memory", "temperature", "power")),
            plot(board.request_rate),
            plot(board.latency, LATENCY, "no completed requests in this window"),
            plot(board.throughput),
            plot(board.cache_hit_rate, CACHE, "no cache lookups in this window"),
        )

    async def draw_engines(window_name: str):
        """The engine panel: read every engine now (vLLM's metrics), draw the window."""
        seconds = dashboards.WINDOWS.get(window_name, dashboards.WINDOWS[dashboards.DEFAULT_WINDOW])
        now = time.time()
        if engines.due(now):
            engines.add(await textgen.engine_stats())
        by_engine = engines.engines()
        start = now - seconds
        span = [start, now]

        def plot(frame: pd.DataFrame, title: str | None = None, empty: str = "") -> gr.LinePlot:
            if title and frame.empty:
                title = f"{title} — {empty}"
            return gr.LinePlot(value=frame, x_lim=span, **({"title": title} if title else {}))

        figures = engine_panel.summary(by_engine) or {
            "engines": "none loaded: load a model (Models tab) or configure VLLM_ENDPOINT"}
        return (
            summary_html(figures),
            plot(engine_panel.requests_frame(by_engine, start)),
            plot(engine_panel.kv_cache_frame(by_engine, start)),
            plot(engine_panel.prefix_hit_frame(by_engine, start), PREFIX,
                 "no prompt tokens looked up in this window"),
            plot(engine_panel.latency_frame(by_engine, start), ENGINE_LATENCY,
                 "no requests in this window"),
        )

    outputs = [summary, cpu, memory, gpu_notice, gpu_row_1, gpu_row_2, gpu_util, gpu_mem,
               gpu_temp, gpu_power, rate, latency, throughput, hits]
    # Sampled every TELEMETRY_INTERVAL_SECONDS; the lab runs the timer only while the tab shows.
    timer = gr.Timer(textgen.settings.TELEMETRY_INTERVAL_SECONDS, active=False)
    triggers = [tab.select, timer.tick, window.change]
    gr.on(triggers, draw, window, outputs, queue=False, show_progress="hidden")
    gr.on(triggers, draw_engines, window,
          [engine_summary, engine_requests, engine_kv, engine_prefix, engine_latency],
          queue=False, show_progress="hidden")
    return timer
