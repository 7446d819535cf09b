"""Running generations for the UI: streamed text, live figures, Stop, and readable errors.

A `Run` drives one `TextGen` generation in its own task; `follow` runs one or more of them
together and wakes the Gradio handler whenever there is something new to draw. Stop cancels
those tasks: the cancellation closes the generation's event stream, which aborts the request
in vLLM, and nothing of it is cached (the core's rule for an unfinished generation).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import gradio as gr

from textgen import Generation, OpenAIRequest, TextGen, TextGenError

from .alerts import user_message
from .logprobs import Token, mark_prompt, tokens_of

log = logging.getLogger(__name__)

State = Literal["waiting", "streaming", "done", "stopped", "error"]
UNEXPECTED = "The generation failed unexpectedly; the server log has the details."


def readiness_problem(textgen: TextGen, model: str) -> str | None:
    """Why `model` cannot generate right now, phrased for the UI (the core's says "POST ...")."""
    try:
        info = textgen.model_info(model)
    except TextGenError as exc:
        return exc.message
    if info.status == "not_loaded":
        return f"The model '{model}' is not loaded: press Load next to the picker, or use the Models tab."
    if info.status == "unavailable":
        return f"The model '{model}' cannot run here: {info.reason}."
    if info.status == "error":
        return f"The model '{model}' failed to load ({info.reason}); try loading it again."
    return None  # loaded, or loading (the core waits for a load in progress)


class Run:
    """One generation as the UI shows it: the text of each choice, its figures, its end."""

    def __init__(self, textgen: TextGen, request: OpenAIRequest, *,
                 problem: str | None = None) -> None:
        """`problem`: a reason known up front why this run cannot start (it then only says so)."""
        self.textgen = textgen
        self.request = request.streamed()
        n = request.body.get("n") or 1
        self.choices = [Choice() for _ in range(n)]
        self.state: State = "waiting"
        self.error: str | None = problem
        self.generation: Generation | None = None
        self.started = time.monotonic()
        self.ended: float | None = None
        self.pieces = 0
        # The prompt's token ids, when vLLM sends them (completions with echo): how many of
        # the echoed tokens are the prompt's.
        self.prompt_token_ids: list[int] | None = None
        self.version = 0  # bumped on every change, so the watcher redraws only when needed

    async def pump(self) -> None:
        """Open the generation and take its deltas until it ends, fails or is cancelled."""
        if self.error is not None:
            self.state, self.ended = "error", time.monotonic()
            self.version += 1
            return
        try:
            self.generation = await self.textgen.open(self.request)
            self.state = "streaming"
            chunks = self.generation.chunks()
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    if self.request.evented:  # Responses: typed events, one output
                        self.pieces += self.choices[0].take_event(chunk)
                    for choice in chunk.get("choices") or ():
                        index = int(choice.get("index", 0))
                        while index >= len(self.choices):
                            self.choices.append(Choice())
                        self.pieces += self.choices[index].take(choice)
                    if self.prompt_token_ids is None and chunk.get("prompt_token_ids"):
                        self.prompt_token_ids = list(chunk["prompt_token_ids"])
                    self.version += 1
            self.state = "done"
        except asyncio.CancelledError:
            self.state = "stopped"
            if self.generation is not None:
                await self.generation.aclose()
            raise
        except TextGenError as exc:
            self.state, self.error = "error", user_message(exc)
        except Exception:
            log.exception("UI generation failed")
            self.state, self.error = "error", UNEXPECTED
        finally:
            self.ended = time.monotonic()
            self.version += 1

    @property
    def finished(self) -> bool:
        return self.state in ("done", "stopped", "error")

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.choices]

    @property
    def finish(self) -> list[str | None]:
        return [c.finish for c in self.choices]

    def output(self) -> str:
        """The text so far; several choices (n > 1) each under a heading."""
        if len(self.texts) == 1:
            return self.texts[0]
        return "\n\n".join(f"── choice {i + 1} ──\n{text}" for i, text in enumerate(self.texts))

    def tokens(self, choice: int = 0) -> list[Token]:
        """A choice's tokens with their probabilities (when asked for); with `echo`, the
        prompt's tokens first, marked."""
        tokens = self.choices[choice].tokens
        if self.request.body.get("echo"):
            count = (len(self.prompt_token_ids) if self.prompt_token_ids is not None
                     else self.generation.prompt_tokens if self.generation is not None else 0)
            return mark_prompt(tokens, count)
        return tokens

    def figures(self) -> dict[str, str]:
        """The figures under the output: tokens, time to first token, tokens/s, cache status."""
        gen = self.generation
        elapsed = (self.ended or time.monotonic()) - self.started
        figures: dict[str, str] = {"status": self._status_text()}
        if gen is not None:
            figures["cache"] = gen.cache_status
        ttft = gen.timing.time_to_first_token if gen is not None else None
        if self.state == "done" and gen is not None:
            total = gen.timing.total or elapsed
            figures["prompt tokens"] = str(gen.prompt_tokens)
            figures["completion tokens"] = str(gen.completion_tokens)
            if ttft is not None:
                figures["first token"] = _seconds(ttft)
            figures["total"] = _seconds(total)
            if gen.cache_status != "HIT" and total > 0:
                figures["tokens/s"] = f"{gen.completion_tokens / total:.1f}"
            reasons = sorted({r for r in self.finish if r})
            if reasons:
                figures["finish"] = ", ".join(reasons)
        else:
            if ttft is not None:
                figures["first token"] = _seconds(ttft)
            figures["elapsed"] = _seconds(elapsed)
            if self.pieces:
                figures["chunks"] = str(self.pieces)
        return figures

    def _status_text(self) -> str:
        return {
            "waiting": "waiting for the first token…",
            "streaming": "streaming…",
            "done": "done",
            "stopped": "stopped — aborted in the engine",
            "error": f"error: {self.error}",
        }[self.state]


@dataclass
class Choice:
    """One choice of a streamed answer, put together from its chunks: text, tool calls,
    token probabilities, and why it ended."""

    text: str = ""
    finish: str | None = None
    tool_call_parts: dict[int, dict[str, Any]] = field(default_factory=dict)
    tokens: list[Token] = field(default_factory=list)

    def take(self, choice: dict[str, Any]) -> bool:
        """Add one chunk's part of this choice; True when it brought new text."""
        delta = choice.get("delta")
        if isinstance(delta, dict):  # chat
            text = delta.get("content") or ""
            for part in delta.get("tool_calls") or ():
                self._take_tool_call(part)
        else:
            text = choice.get("text") or ""
        self.text += text
        self.tokens += tokens_of(choice.get("logprobs"))
        if choice.get("finish_reason") is not None:
            self.finish = choice["finish_reason"]
        return bool(text)

    def take_event(self, event: dict[str, Any]) -> bool:
        """Add one event of a Responses stream: its text, and how it ended; True when it
        brought new text."""
        kind = event.get("type")
        if kind == "response.output_text.delta":
            self.text += event.get("delta") or ""
            return bool(event.get("delta"))
        if kind in ("response.completed", "response.incomplete"):
            response = event.get("response") or {}
            reason = (response.get("incomplete_details") or {}).get("reason")
            self.finish = "length" if reason == "max_output_tokens" else reason or "stop"
        return False

    def _take_tool_call(self, part: dict[str, Any]) -> None:
        # OpenAI streams a tool call in pieces: id, type and name first, then the arguments
        # in fragments, all under the call's index.
        call = self.tool_call_parts.setdefault(
            int(part.get("index", 0)), {"id": None, "type": "function",
                                         "function": {"name": "", "arguments": ""}})
        if part.get("id"):
            call["id"] = part["id"]
        function = part.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        return [self.tool_call_parts[i] for i in sorted(self.tool_call_parts)]


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def figures_html(figures: dict[str, str]) -> str:
    """The figures as a row of labelled chips (the HTML component styles `.fig`)."""
    chips = []
    for name, value in figures.items():
        tone = ""
        if name == "status":
            tone = " error" if value.startswith("error") else " stopped" if value.startswith("stopped") else ""
        elif name == "cache":
            tone = " hit" if value == "HIT" else ""
        chips.append(
            f'<span class="fig{tone}" data-figure="{html.escape(name)}">'
            f"<small>{html.escape(name)}</small> <b>{html.escape(value)}</b></span>"
        )
    return '<div class="figures">' + "".join(chips) + "</div>"


FIGURES_CSS = """
.figures { display: flex; flex-wrap: wrap; gap: 6px; font-size: 0.9em; }
.figures .fig { border: 1px solid var(--border-color-primary); border-radius: 6px;
  padding: 2px 8px; background: var(--background-fill-secondary); }
.figures .fig small { color: var(--body-text-color-subdued); }
.figures .fig.error { border-color: var(--color-red-500, #ef4444); }
.figures .fig.stopped { border-color: var(--color-orange-500, #f97316); }
.figures .fig.hit { border-color: var(--color-green-500, #22c55e); }
"""


async def follow(runs: Sequence[Run], stop: asyncio.Event, *, tick: float = 0.1,
                 heartbeat: float = 0.25) -> AsyncIterator[None]:
    """Run `runs` together; yield at most every `tick` when they changed (and every `heartbeat`
    for the clock).

    Ten redraws a second read as smooth, and a browser keeps up with them: at one redraw per
    token (~30/s) Gradio's page in headless Chromium fell 13 s behind a 20 tok/s engine on a
    2-core machine, so Stop landed after the generation had ended.

    Setting `stop` cancels every unfinished run. Closing this generator early (the browser
    went away) cancels them too, so no generation outlives the page that asked for it.
    """
    tasks = [asyncio.create_task(run.pump(), name="ui generation") for run in runs]
    stopper = asyncio.create_task(stop.wait(), name="ui stop")
    seen, last = -1, 0.0
    try:
        pending = set(tasks)
        while pending:
            done, _ = await asyncio.wait({*pending, stopper}, timeout=tick,
                                         return_when=asyncio.FIRST_COMPLETED)
            pending -= done
            if stop.is_set() and pending:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                pending = set()
            version = sum(run.version for run in runs)
            now = time.monotonic()
            if version != seen or now - last >= heartbeat or not pending:
                seen, last = version, now
                yield
    finally:
        stopper.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)


class StopButtons:
    """Per-page stop signals: a Stop click sets the event its page's running stream watches.

    `press` must run on the event loop (the Stop handlers are async for that): an
    `asyncio.Event` is not thread-safe, and Gradio runs a plain function in a worker thread.
    """

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], asyncio.Event] = {}

    @contextlib.contextmanager
    def armed(self, session: str, view: str) -> Iterator[asyncio.Event]:
        event = self._events[(session, view)] = asyncio.Event()
        # Logged with the press: a Stop that found nothing running is then placed before,
        # during or after the generation, and under which page's key.
        log.info("Generation armed for Stop in %s (page %s)", view, session[:8])
        try:
            yield event
        finally:
            if self._events.get((session, view)) is event:
                del self._events[(session, view)]
            log.info("Generation in %s (page %s) ended%s", view, session[:8],
                     " by Stop" if event.is_set() else "")

    def press(self, session: str, view: str) -> bool:
        # Logged: a Stop that did not stop is then told apart from one that never arrived.
        event = self._events.get((session, view))
        log.info("Stop pressed in %s (page %s): %s", view, session[:8],
                 "stopping its generation" if event is not None else "nothing was running")
        if event is None:
            return False
        event.set()
        return True


def buttons(running: bool) -> gr.Button:
    """The start button's update: disabled while something runs. Sent with every redraw.

    Gradio (6.31, `Blocks.handle_streaming_diffs`) sends a generator's outputs after the first
    as diffs from the one before, so an unchanged update costs nothing on the wire, and the
    page's state of an output is the value the generator yielded last: a `gr.skip()` after an
    update replaces it. Sent once and then skipped, an update was lost on a page behind the
    stream (our reading: it rendered only the latest state): in full test runs a Stop enabled
    by a reply's first update stayed disabled while 1500 tokens streamed (the chat's, the
    playground's, the sweep's), and no press reached the lab.

    Stop buttons are never outputs of a generation at all: each is always clickable (a press
    with nothing running does nothing, and is logged), so nothing can be lost on the way. Their
    presses go through Gradio's queue (`concurrency_limit=None`: at once), like the
    generation's own events: sent with `queue=False`, in two full test runs the page issued
    the press's request only minutes later, after the stream had ended (the tests' traced
    clicks saw it go out at 05:20:49 for a click at 05:17).

    The generation handlers set this in their own yields rather than in `.then` steps,
    because Gradio skips the rest of a chain once a step raises.
    """
    return gr.Button(interactive=not running)


def session_of(request: gr.Request | None) -> str:
    """The browser page a Gradio event came from."""
    return getattr(request, "session_hash", None) or "local"
