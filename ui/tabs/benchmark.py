"""The Benchmark tab: a loaded model's throughput and latency against concurrency, measured in
the browser through the lab's own pipeline, drawn as it goes, downloadable as CSV."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from textgen import TextGen, TextGenError

from .. import downloads, picker, sweep, sweep_runner
from ..alerts import user_error, user_message
from ..engine_panel import EngineHistory
from ..streaming import StopButtons, buttons, readiness_problem, session_of

VIEW = "benchmark"
DEFAULT_LEVELS = "1, 2, 4, 8, 16"


def _plot(name: str) -> gr.ScatterPlot:
    title, y_title, _ = sweep.PLOTS[name]
    # Points, not lines: the first level shows as soon as it is measured.
    return gr.ScatterPlot(sweep.plot_frame([], name), x="concurrency", y="value", color="series",
                          title=title, x_title="concurrency", y_title=y_title, color_title=" ",
                          height=250, label=title, show_label=False, elem_id=f"bench-{name}")


def plan_text(textgen: TextGen, model: str | None, levels: str, rounds: float) -> str:
    """What Run would send, next to the model's rate limit; or what is wrong with the form."""
    if not model:
        return "Pick a loaded model."
    try:
        planned = sweep.plan(sweep.concurrencies(levels, textgen.settings.MAX_CONCURRENT_REQUESTS),
                             int(rounds))
    except ValueError as exc:
        return f"⚠ {exc}"
    total = sum(n for _, n in planned)
    limit = textgen.rate_limit(model)
    per_level = ", ".join(f"{n} at {c}" for c, n in planned)
    verdict = ("no rate limit" if limit <= 0 else
               f"within its limit of {limit} requests/min" if total <= limit else
               f"⚠ more than its limit of {limit} requests/min: Run will refuse")
    return f"Sends **{total}** requests ({per_level}) — {verdict}."


def build(demo: gr.Blocks, textgen: TextGen, stops: StopButtons, guard: sweep_runner.SweepGuard,
          engines: EngineHistory, tab: gr.Tab) -> None:
    """Lay out the tab inside the current Blocks context and wire its events."""
    gr.Markdown(
        "Measure a loaded model against concurrency: each level sends its requests through the "
        "lab's own pipeline (limits, engine, metrics; the response cache is bypassed), as "
        "streamed completions of random-token prompts that run to exactly the output length. "
        "The figures are `vllm bench serve`'s, computed its way. The sweep counts against the "
        "model's rate limit like any caller; one sweep runs at a time.")
    with gr.Row():
        model = gr.Dropdown(label="Model (loaded)", choices=[], scale=3, elem_id="bench-model")
        input_len = gr.Number(128, label="prompt tokens", precision=0, minimum=1, scale=1,
                              elem_id="bench-input-len")
        output_len = gr.Number(64, label="output tokens", precision=0, minimum=1, scale=1,
                               elem_id="bench-output-len")
        levels = gr.Textbox(DEFAULT_LEVELS, label="concurrencies", scale=2, elem_id="bench-levels")
        rounds = gr.Number(3, label="batches per level", precision=0, minimum=1, maximum=100,
                           scale=1, elem_id="bench-rounds",
                           info="each level sends concurrency × batches requests")
    plan = gr.Markdown(elem_id="bench-plan")
    with gr.Row():
        run = gr.Button("Run sweep", variant="primary", elem_id="bench-run")
        stop = gr.Button("Stop", variant="stop", elem_id="bench-stop")  # always: streaming.buttons
        csv = gr.DownloadButton("Download CSV", value=None, interactive=False, elem_id="bench-csv")
    about = gr.Markdown(elem_id="bench-about")
    progress = gr.Markdown(elem_id="bench-progress")
    with gr.Row():
        throughput, requests = _plot("throughput"), _plot("requests")
    with gr.Row():
        ttft, itl = _plot("ttft"), _plot("itl")
    table = gr.Dataframe(sweep.table([]), interactive=False, elem_id="bench-table",
                         label="Figures per level")
    plots = {"throughput": throughput, "requests": requests, "ttft": ttft, "itl": itl}

    def models(current: str | None) -> gr.Dropdown:
        loaded = [m.id for m in picker.ordered(textgen.list_models())
                  if m.status == "loaded" and m.runner == "generate"]
        value = current if current in loaded else (loaded[0] if loaded else None)
        return gr.Dropdown(choices=loaded, value=value)

    def drawn(rows: list[dict[str, Any]]) -> dict[Any, Any]:
        out: dict[Any, Any] = {table: sweep.table(rows)}
        right = max((r["concurrency"] for r in rows), default=1)
        for name, plot in plots.items():
            frame = sweep.plot_frame(rows, name)
            top = float(frame["value"].max()) if not frame.empty else 1.0
            # From zero, with a margin: the points at the ends are not cut in half.
            out[plot] = gr.ScatterPlot(value=frame, x_lim=[0, right * 1.08 + 0.5],
                                       y_lim=[0, top * 1.15 or 1.0])
        return out

    async def go(model_id: str | None, input_len_: float, output_len_: float, levels_: str,
                 rounds_: float, request: gr.Request):
        if not model_id:
            raise user_error("Pick a loaded model first (the Models tab loads one).")
        problem = readiness_problem(textgen, model_id)
        if problem:
            raise user_error(problem, title="Model not ready")
        ceiling = textgen.settings.MAX_CONCURRENT_REQUESTS
        try:
            planned = sweep.plan(sweep.concurrencies(levels_, ceiling), int(rounds_ or 1))
        except ValueError as exc:
            raise user_error(str(exc)) from None
        total, limit = sum(n for _, n in planned), textgen.rate_limit(model_id)
        if 0 < limit < total:
            raise user_error(
                f"This sweep sends {total} requests and {model_id} takes {limit} per minute (its "
                "rate limit, which API clients share): part of it would be refused and the "
                "figures spoiled. Use fewer levels or batches, or start the lab with "
                f"RATE_LIMITS='{{\"{model_id}\": 0}}' (no limit) for benchmarking.",
                title="Over the rate limit")
        if guard.running is not None:
            raise user_error(f"Another sweep is running ({guard.running}); wait for it to "
                             "finish: two sweeps at once would measure each other.",
                             title="Benchmark busy")
        facts = sweep_runner.about(textgen, model_id)
        facts.update({"prompt tokens": str(int(input_len_)), "output tokens": str(int(output_len_))})
        ran_on = " · ".join(f"**{k}** {html.escape(v)}" for k, v in facts.items())
        rows: list[dict[str, Any]] = []
        ended = "done"
        with guard.hold(f"{model_id} at concurrency {', '.join(str(c) for c, _ in planned)}"), \
                stops.armed(session_of(request), VIEW) as stop_event:
            yield {about: f"Running on: {ran_on}", run: buttons(running=True),
                   progress: "Preparing the prompts…",
                   csv: gr.DownloadButton(value=None, interactive=False), **drawn([])}
            sweeping = sweep_runner.sweep(textgen, model_id, planned, int(input_len_), int(output_len_))
            try:
                async for state in sweeping:
                    rows = list(state.rows)
                    if engines.due():  # the engine panel sees the sweep too
                        engines.add(await textgen.engine_stats())
                    if state.stopped_by:
                        ended = f"stopped: {state.stopped_by}"
                    line = (f"Concurrency **{state.level}**: {state.done} of {state.total} "
                            "requests done…" if state.level is not None else "")
                    yield {progress: line, **drawn(rows)}
                    if stop_event.is_set():
                        ended = "stopped"
                        break
            except TextGenError as exc:
                ended = f"failed: {user_message(exc)}"
            finally:
                await sweeping.aclose()
        failed = sum(r["failed"] for r in rows)
        summary = (f"Sweep {ended}. {len(rows)} level(s), {sum(r['requests'] for r in rows)} "
                   "requests completed" + (f", **{failed} failed**" if failed else "") + ".")
        path = downloads.write("textgen-lab-sweep.csv", sweep.csv_text(rows, facts)) if rows else None
        yield {progress: summary, run: buttons(running=False), **drawn(rows),
               csv: gr.DownloadButton(value=path, interactive=path is not None)}

    async def press_stop(request: gr.Request) -> None:
        stops.press(session_of(request), VIEW)

    gr.on([demo.load, tab.select], models, model, model, queue=False, show_progress="hidden")
    form = [model, levels, rounds]
    gr.on([c.change for c in form], lambda m, lv, r: plan_text(textgen, m, lv, r), form, plan,
          queue=False, show_progress="hidden")
    outputs = [about, run, progress, csv, table, *plots.values()]
    run.click(go, [model, input_len, output_len, levels, rounds], outputs,
              concurrency_limit=None, show_progress="hidden", api_name="benchmark_sweep")
    stop.click(press_stop, None, None, concurrency_limit=None)
