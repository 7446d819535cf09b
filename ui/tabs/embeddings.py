"""The Embeddings tab: several texts in, one vector each from a pooling model (vLLM's
`/v1/embeddings` through the lab's pipeline: cache, limits, metrics), and how alike they are
as a heatmap of cosine similarities."""

from __future__ import annotations

import html
import math
from typing import Any

import gradio as gr

from textgen import OpenAIRequest, TextGen, TextGenError

from .. import picker
from ..alerts import user_error, user_message
from ..streaming import figures_html, readiness_problem

EXAMPLE = """The cat sat on the mat.
A kitten rests on a rug.
Stock markets fell sharply today.
Shares dropped at the opening bell."""
MAX_TEXTS = 64

HEATMAP_CSS = """
.similarity { border-collapse: collapse; font-size: 0.85em; }
.similarity th { font-weight: normal; max-width: 14em; overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; padding: 2px 6px; text-align: left; }
.similarity td { width: 4.2em; text-align: center; padding: 4px; color: #111; }
"""


def texts_of(value: str | None) -> list[str]:
    """The non-empty lines of the texts box, each one text."""
    return [line.strip() for line in (value or "").splitlines() if line.strip()]


def cosine_matrix(vectors: list[list[float]]) -> list[list[float]]:
    """Cosine similarity of every pair of vectors (a zero vector is alike nothing)."""
    norms = [math.sqrt(sum(x * x for x in v)) for v in vectors]
    return [[(sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)) if na and nb else 0.0
             for b, nb in zip(vectors, norms, strict=True)]
            for a, na in zip(vectors, norms, strict=True)]


def heatmap_html(texts: list[str], matrix: list[list[float]]) -> str:
    """The similarity matrix as a table whose cells shade from white (unlike) to blue (alike);
    each cell carries its pair and value for the page (and its tests) to read."""
    def shade(value: float) -> str:
        alpha = max(0.0, min(1.0, value))
        return f"background: rgba(37, 99, 235, {alpha:.2f})"

    head = "".join(f'<th title="{html.escape(t)}">{i + 1}. {html.escape(t[:24])}</th>'
                   for i, t in enumerate(texts))
    rows = []
    for i, row in enumerate(matrix):
        cells = "".join(
            f'<td data-i="{i}" data-j="{j}" data-value="{value:.6f}" style="{shade(value)}">'
            f"{value:.2f}</td>" for j, value in enumerate(row))
        rows.append(f'<tr><th title="{html.escape(texts[i])}">{i + 1}. '
                    f"{html.escape(texts[i][:24])}</th>{cells}</tr>")
    return (f"<style>{HEATMAP_CSS}</style><table class=\"similarity\"><tr><th></th>{head}</tr>"
            + "".join(rows) + "</table>")


def build(demo: gr.Blocks, textgen: TextGen, tab: gr.Tab) -> None:
    gr.Markdown("Embed several texts (one per line) with a pooling model and see how alike "
                "they are: cosine similarity, 1 is the same direction. The embedded SmolLM2 "
                "serves as one too (`…-embed`): load it here or in the Models tab.")
    with gr.Row():
        model = gr.Dropdown(label="Embedding model", choices=[], scale=3, elem_id="emb-model")
        load = gr.Button("Load", scale=1, visible=False, elem_id="emb-load")
    about = gr.Markdown(elem_id="emb-about")
    texts = gr.Textbox(label="Texts, one per line", value=EXAMPLE, lines=6, elem_id="emb-texts")
    embed = gr.Button("Embed", variant="primary", elem_id="emb-go")
    figures = gr.HTML(elem_id="emb-figures")
    heatmap = gr.HTML(elem_id="emb-heatmap")

    def models(current: str | None):
        infos = textgen.list_models()
        choices = picker.choices(infos, "pooling")
        chosen = current if current in {v for _, v in choices} else picker.default_model(
            infos, "pooling")
        info = picker.info_or_none(textgen, chosen)
        return (gr.Dropdown(choices=choices, value=chosen),
                picker.describe(info) if info else "No pooling model is known to this lab.",
                gr.Button(visible=info is not None and info.status in ("not_loaded", "error")))

    async def load_model(model_id: str | None):
        async for line in picker.load_progress(textgen, model_id):
            yield line, gr.Button(visible=False)
        info = picker.info_or_none(textgen, model_id)
        yield (picker.describe(info) if info else ""), gr.Button(
            visible=info is not None and info.status in ("not_loaded", "error"))

    async def run(model_id: str | None, value: str) -> tuple[str, str]:
        lines = texts_of(value)
        if not model_id:
            raise user_error("Pick an embedding model first.")
        if not 1 <= len(lines) <= MAX_TEXTS:
            raise user_error(f"Give between 1 and {MAX_TEXTS} texts, one per line.")
        problem = readiness_problem(textgen, model_id)
        if problem:
            raise user_error(problem, title="Model not ready")
        request = OpenAIRequest("embeddings", {"model": model_id, "input": lines})
        try:
            generation = await textgen.open(request)
        except TextGenError as exc:
            raise user_error(user_message(exc), title="Embedding failed") from None
        answer: dict[str, Any] = generation.response or {}
        vectors = [d["embedding"] for d in sorted(answer.get("data") or (),
                                                  key=lambda d: d.get("index", 0))]
        total = generation.timing.total
        shown = {"texts": str(len(vectors)),
                 "dimensions": str(len(vectors[0]) if vectors else 0),
                 "prompt tokens": str(generation.prompt_tokens),
                 "cache": generation.cache_status}
        if total is not None:
            shown["total"] = f"{total * 1000:.0f} ms"
        return figures_html(shown), heatmap_html(lines, cosine_matrix(vectors))

    gr.on([demo.load, tab.select], models, model, [model, about, load], queue=False,
          show_progress="hidden")
    model.select(models, model, [model, about, load], queue=False, show_progress="hidden")
    load.click(load_model, model, [about, load], concurrency_limit=None)
    embed.click(run, [model, texts], [figures, heatmap], concurrency_limit=None,
                show_progress="minimal")
