"""The model picker shared by the tabs: every catalog model with its status, and loading one.

Gradio's dropdown cannot grey out single entries, so models that cannot run here are listed
(marked "unavailable") and picking one puts the previous model back with the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import gradio as gr

from textgen import DEFAULT_MODEL, ModelInfo, TextGen, TextGenError

from .alerts import user_error

STATUS_MARK = {
    "loaded": "● loaded",
    "loading": "◌ loading",
    "not_loaded": "○ not loaded",
    "error": "✕ load failed",
    "unavailable": "✕ unavailable here",
}
_ORDER = {"loaded": 0, "loading": 1, "not_loaded": 2, "error": 3, "unavailable": 4}


def ordered(infos: list[ModelInfo]) -> list[ModelInfo]:
    """Loaded models first, then loading, loadable, failed, and those that cannot run here."""
    return sorted(infos, key=lambda m: _ORDER[m.status])


def choices(infos: list[ModelInfo], runner: str = "generate") -> list[tuple[str, str]]:
    """(label, model id) pairs in `ordered` order, of the models that `runner` (text
    generators by default; "pooling" for embedding models)."""
    return [(f"{m.id}  ·  {STATUS_MARK[m.status]}", m.id) for m in ordered(infos)
            if m.runner == runner]


def signature(infos: list[ModelInfo]) -> str:
    """Changes whenever a model's status does: the timers redraw only then."""
    return "|".join(f"{m.id}={m.status}" for m in infos)


def default_model(infos: list[ModelInfo], runner: str = "generate") -> str | None:
    """A loaded model (the default one if loaded), else the default, else any runnable one;
    of the models that `runner`."""
    infos = [m for m in infos if m.runner == runner]
    loaded = [m.id for m in infos if m.status == "loaded"]
    if DEFAULT_MODEL in loaded:
        return DEFAULT_MODEL
    if loaded:
        return loaded[0]
    runnable = [m.id for m in infos if m.status != "unavailable"]
    if DEFAULT_MODEL in runnable:
        return DEFAULT_MODEL
    return runnable[0] if runnable else None


def size_class(name: str) -> str:
    """The seed's size classes read as ranges: "7B" is every model up to 7B parameters."""
    return "up to 7B" if name == "7B" else f"{name} class"


def describe(info: ModelInfo) -> str:
    """One line of Markdown under a picker: status, kind, size class, limit, and what to do."""
    kind = ("pooling model (embeddings, score)" if info.runner == "pooling"
            else "instruction-tuned" if info.instruct else "base model (completions)")
    facts = (f"{STATUS_MARK[info.status]} · {kind} · {size_class(info.size_class)} · "
             f"limit {info.rate_limit} req/min")
    if info.gpu_memory_usage is not None:
        facts += f" · {info.gpu_memory_usage:.2f} GB GPU"
    if info.status == "not_loaded":
        facts += " — press **Load** to start it"
    elif info.status == "loading":
        facts += " — starting vLLM; requests wait for it"
    elif info.status in ("error", "unavailable") and info.reason:
        facts += f" — {info.reason}"
    return facts


def info_or_none(textgen: TextGen, model: str | None) -> ModelInfo | None:
    if not model:
        return None
    try:
        return textgen.model_info(model)
    except TextGenError:
        return None


def pick(textgen: TextGen, model: str | None, previous: str | None) -> str | None:
    """The model a picker ends on: `previous` again (with a warning) if `model` cannot run."""
    info = info_or_none(textgen, model)
    if info is not None and info.status == "unavailable":
        gr.Warning(f"{model} cannot run here: {info.reason}.", title="Model unavailable")
        return previous
    return model


async def load_progress(textgen: TextGen, model: str | None) -> AsyncIterator[str]:
    """Load `model`, yielding a progress line every second; raises gr.Error on failure."""
    if not model:
        raise user_error("Pick a model first.")
    info = info_or_none(textgen, model)
    if info is None:
        raise user_error(f"There is no model '{model}'.")
    if info.status == "loaded":
        yield f"{model} is already loaded."
        return
    limit = textgen.settings.MAX_LOADED_MODELS
    loaded = [m.id for m in textgen.list_models() if m.status == "loaded" and m.backend == "vllm"]
    if 0 < limit <= len(loaded):
        gr.Info(f"Only {limit} in-process model(s) stay loaded at once (MAX_LOADED_MODELS): "
                f"loading {model} unloads the least recently used of {', '.join(loaded)}.")
    task = asyncio.ensure_future(textgen.load(model))
    # The load goes on if the page is closed: keep its error from going unretrieved.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    started = time.monotonic()
    while not task.done():
        elapsed = time.monotonic() - started
        yield (f"Loading {model}… {elapsed:.0f} s (the first load converts the weights, "
               "then vLLM starts)")
        await asyncio.wait({task}, timeout=1.0)
    try:
        task.result()
    except TextGenError as exc:
        raise user_error(exc.message, title="Load failed") from None
    except Exception as exc:
        raise user_error(f"Loading {model} failed ({type(exc).__name__}); the server log has "
                       "the details.", title="Load failed") from None
    yield f"{model} loaded in {time.monotonic() - started:.0f} s."
