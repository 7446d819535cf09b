"""Compare's blind pairwise mode: two of the shown columns answer the prompt as "Left" and
"Right", in an order nobody sees; the researcher says which is better (or a tie), the vote is
kept and the leaderboard (textgen.experiments.arena) ranks the configurations."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr
import pandas as pd

from textgen import OpenAIRequest, TextGen, TextGenError

from .. import forms
from ..alerts import user_error
from ..streaming import Run as UiRun
from ..streaming import StopButtons, follow, readiness_problem, session_of

VIEW = "compare"  # one Stop for the tab
ARENA = "compare"  # the leaderboard these votes go to


@dataclass(frozen=True)
class Contender:
    """One Compare column's configuration, named as the leaderboard shows it."""

    model: str
    temperature: float
    top_p: float
    seed: int | None

    @property
    def label(self) -> str:
        seed = f" seed={self.seed}" if self.seed is not None else ""
        return f"{self.model} temperature={self.temperature:g} top_p={self.top_p:g}{seed}"

    def request(self, mode: str, prompt: str, max_tokens: float,
                experiment: str) -> OpenAIRequest:
        """Its request for `prompt`, kept as a Compare run of `experiment`."""
        options: dict[str, Any] = {"max_tokens": int(max_tokens),
                                   "temperature": self.temperature, "top_p": self.top_p}
        if self.seed is not None:
            options["seed"] = self.seed
        return forms.generation_request(self.model, mode, prompt, options).kept_as(
            "compare", experiment)


def columns(count: int, values: tuple[Any, ...]) -> list[Contender]:
    """The first `count` columns' configurations, from their widgets' values (model,
    temperature, top_p and seed of each, in order); a column with no model has model ""."""
    return [Contender(model or "", float(temperature), float(top_p), forms.parse_seed(seed))
            for model, temperature, top_p, seed in (values[4 * i: 4 * i + 4]
                                                    for i in range(count))]


def contenders(count: int, values: tuple[Any, ...]) -> list[Contender]:
    """The shown columns that have a model, each configuration once."""
    found: dict[str, Contender] = {}
    for c in columns(count, values):
        if c.model:
            found.setdefault(c.label, c)
    return list(found.values())


def board(textgen_board: pd.DataFrame) -> pd.DataFrame:
    return textgen_board.rename(columns={"rating": "rating (Elo scale)", "low": "95% low",
                                         "high": "95% high"})


def build(demo: gr.Blocks, textgen: TextGen, stops: StopButtons, prompt: gr.Textbox,
          mode: gr.Radio, max_tokens: gr.Slider, count: gr.Radio, columns: list[Any]) -> None:
    """The blind round's widgets, under the columns; `columns`: each column's model,
    temperature, top_p and seed widgets, in order."""
    with gr.Accordion("Blind pairwise", open=False, elem_id="cmp-blind"):
        gr.Markdown("Two of the shown columns answer the prompt as **Left** and **Right**; "
                    "which is which is shown only after your vote. Votes rank the "
                    "configurations (Bradley–Terry on the Elo scale, with 95% intervals).")
        start = gr.Button("New blind round", variant="primary", elem_id="cmp-blind-start")
        with gr.Row(equal_height=False):
            left = gr.Textbox(label="Left", lines=8, interactive=False, elem_id="cmp-blind-left")
            right = gr.Textbox(label="Right", lines=8, interactive=False,
                               elem_id="cmp-blind-right")
        with gr.Row():
            votes = [gr.Button(text, interactive=False, elem_id=f"cmp-vote-{name}")
                     for name, text in (("left", "Left is better"), ("tie", "Tie"),
                                        ("right", "Right is better"))]
        revealed = gr.Markdown(elem_id="cmp-blind-reveal")
        leaderboard = gr.Dataframe(interactive=False, label="Leaderboard",
                                   elem_id="cmp-leaderboard")
    pair = gr.State(None)  # the round: who is left and right, their runs, the prompt

    async def show_board():
        try:
            return board(await textgen.arena.leaderboard(ARENA))
        except TextGenError as exc:
            gr.Warning(exc.message, title="Leaderboard unavailable")
            return gr.skip()

    async def blind_round(prompt_, mode_, max_tokens_, n,
                          a_model, a_temperature, a_top_p, a_seed, b_model, b_temperature, b_top_p, b_seed,
                          c_model, c_temperature, c_top_p, c_seed, d_model, d_temperature, d_top_p, d_seed,
                          request: gr.Request):
        # Gradio passes gr.Request only to a parameter it can see: no *args here.
        values = (a_model, a_temperature, a_top_p, a_seed, b_model, b_temperature, b_top_p,
                  b_seed, c_model, c_temperature, c_top_p, c_seed, d_model, d_temperature,
                  d_top_p, d_seed)
        pool = contenders(int(n), values)
        if len(pool) < 2:
            raise user_error("A blind round needs two columns that differ in model or "
                             "settings.")
        if not (prompt_ or "").strip():
            raise user_error("Write a prompt first.")
        chosen = random.sample(pool, 2)  # the order is the secret
        runs = []
        for c in chosen:
            request_ = c.request(mode_, prompt_, max_tokens_, f"arena-{ARENA}")
            runs.append(UiRun(textgen, replace(request_, run_id=uuid.uuid4().hex),
                              problem=readiness_problem(textgen, c.model)))
        round_ = {"labels": [c.label for c in chosen], "prompt": prompt_,
                  "runs": [r.request.run_id for r in runs]}
        hidden = (gr.Button(interactive=False),) * 3
        with stops.armed(session_of(request), VIEW) as stop_event:
            async for _ in follow(runs, stop_event):
                yield runs[0].output(), runs[1].output(), "", None, *hidden
        if any(r.state != "done" for r in runs):
            errors = "; ".join(r.error or r.state for r in runs if r.state != "done")
            raise user_error(f"The round did not finish ({errors}); start another.")
        yield (runs[0].output(), runs[1].output(), "Which answer is better?", round_,
               *(gr.Button(interactive=True),) * 3)

    async def cast(round_: dict[str, Any] | None, winner: str):
        if not round_:
            raise user_error("Start a blind round first.")
        left_label, right_label = round_["labels"]
        try:
            await textgen.arena.vote(left_label, right_label, winner, arena=ARENA,
                                     left_run=round_["runs"][0], right_run=round_["runs"][1],
                                     prompt=round_["prompt"])
        except TextGenError as exc:
            raise user_error(exc.message, title="Vote not kept") from None
        said = {"left": "Left is better", "right": "Right is better", "tie": "A tie"}[winner]
        text = (f"{said}, kept. Left was **{left_label}**; right was **{right_label}**.")
        return text, None, *(gr.Button(interactive=False),) * 3

    outputs = [left, right, revealed, pair, *votes]
    start.click(blind_round, [prompt, mode, max_tokens, count, *columns], outputs,
                concurrency_limit=None, show_progress="hidden")
    for button, winner in zip(votes, ("left", "tie", "right"), strict=True):
        button.click(cast, [pair, gr.State(winner)], [revealed, pair, *votes],
                     show_progress="hidden").then(show_board, None, leaderboard,
                                                  show_progress="hidden")
    demo.load(show_board, None, leaderboard, show_progress="hidden")
