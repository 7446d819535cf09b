"""Evaluations: a dataset × a grid of configurations × a scorer, run in the background through
the lab's own pipeline (limits, cache, metrics, replicas; every request a kept run), resumed
after a restart from the scores already written, and summed up per configuration.

Two kinds of dataset: items of the researcher's own (textgen.experiments.datasets), scored by
textgen.experiments.scorers; or an lm-evaluation-harness task by name, run by lm-eval itself
through the lab (textgen.experiments.lm_eval_tasks) so that its numbers are lm-eval's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from ..errors import (
    BackendDown,
    EngineOverloaded,
    GenerationInterrupted,
    InvalidRequest,
    ModelNotReady,
    RateLimited,
    TextGenError,
)
from ..request import OpenAIRequest
from . import scorers
from .datasets import Item

if TYPE_CHECKING:
    from ..service import TextGen

log = logging.getLogger(__name__)

Route = Literal["chat", "completions"]
# Refusals that pass (a busy engine, a limit, a model loading): an item waits and retries.
_PASSING = (RateLimited, EngineOverloaded, ModelNotReady, GenerationInterrupted, BackendDown)
_RETRIES = 60
# Body fields a configuration may set: the input and the transport are the evaluation's.
_RESERVED = {"model", "messages", "prompt", "stream", "stream_options", "n"}


@dataclass(frozen=True, slots=True)
class Config:
    """One column of the grid: a model (or adapter), its sampling settings, a system prompt."""

    model: str
    settings: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    name: str = ""

    def __post_init__(self) -> None:
        reserved = sorted(_RESERVED & set(self.settings))
        if reserved:
            raise InvalidRequest(f"A configuration's settings cannot set {', '.join(reserved)}: "
                                 "the evaluation sends the items.", param="configs")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        parts = [self.model, *(f"{k}={v}" for k, v in sorted(self.settings.items()))]
        if self.system:
            parts.append(f"system={self.system[:24]!r}")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def grid(models: Iterable[str], settings: dict[str, list[Any]] | None = None,
         systems: Iterable[str | None] = (None,)) -> list[Config]:
    """Every combination: models × each setting's values × system prompts."""
    settings = settings or {}
    names = list(settings)
    return [Config(model=m, settings=dict(zip(names, values, strict=True)), system=system)
            for m in models for system in systems
            for values in itertools.product(*(settings[n] for n in names))]


@dataclass
class EvaluationSpec:
    """What an evaluation runs. `items` or `lm_eval_task`; `scorer` a name, a dict with options,
    or (from a notebook) a function, which cannot be resumed after a restart."""

    configs: list[Config]
    items: list[Item] | None = None
    lm_eval_task: str | None = None
    lm_eval_include_path: str | None = None
    scorer: str | dict[str, Any] | scorers.Scorer = "exact_match"
    route: Route = "chat"
    concurrency: int = 4
    max_tokens: int = 64
    name: str = ""

    def __post_init__(self) -> None:
        if not self.configs:
            raise InvalidRequest("An evaluation needs at least one configuration.", param="configs")
        if (self.items is None) == (self.lm_eval_task is None):
            raise InvalidRequest("An evaluation needs a dataset: items, or an lm-eval task.",
                                 param="dataset")
        labels = [c.label for c in self.configs]
        if len(set(labels)) != len(labels):
            raise InvalidRequest("Two configurations have the same name.", param="configs")
        if not 1 <= self.concurrency <= 256:
            raise InvalidRequest("concurrency is 1 to 256.", param="concurrency")
        if self.items is not None:
            chosen = scorers.scorer(self.scorer)  # a bad scorer fails here, not mid-run
            if chosen == scorers.CHOICE and any(not i.choices or i.prompt is None
                                                for i in self.items):
                raise InvalidRequest("The choice scorer needs every item to have a prompt "
                                         "and choices.", param="scorer")
            ids = [i.id for i in self.items]
            if len(set(ids)) != len(ids):
                raise InvalidRequest("Two dataset items have the same id.", param="dataset")

    @property
    def total(self) -> int:
        return len(self.configs) * len(self.items) if self.items is not None else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "configs": [c.to_json() for c in self.configs],
            "items": None if self.items is None else [i.to_json() for i in self.items],
            "lm_eval_task": self.lm_eval_task, "lm_eval_include_path": self.lm_eval_include_path,
            "scorer": self.scorer if not callable(self.scorer) else {"name": "python"},
            "route": self.route, "concurrency": self.concurrency, "max_tokens": self.max_tokens,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvaluationSpec:
        items = data.get("items")
        return cls(
            name=data.get("name") or "", configs=[Config(**c) for c in data["configs"]],
            items=None if items is None else [Item.from_json(i) for i in items],
            lm_eval_task=data.get("lm_eval_task"),
            lm_eval_include_path=data.get("lm_eval_include_path"),
            scorer=data.get("scorer") or "exact_match", route=data.get("route") or "chat",
            concurrency=int(data.get("concurrency") or 4),
            max_tokens=int(data.get("max_tokens") or 64),
        )


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0

    def step(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1


@dataclass
class Results:
    """An evaluation's results: `summary` (one row per configuration) and `items` (one row per
    item and configuration); `wide()` puts the configurations side by side."""

    summary: pd.DataFrame
    items: pd.DataFrame

    def wide(self) -> pd.DataFrame:
        """One row per item: each configuration's output and score, and whether they disagree."""
        if self.items.empty:
            return pd.DataFrame()
        outputs = self.items.pivot(index="item", columns="config", values="output")
        scores = self.items.pivot(index="item", columns="config", values="score")
        frame = pd.concat({"output": outputs, "score": scores}, axis=1)
        frame[("disagree", "")] = scores.nunique(axis=1, dropna=False) > 1
        return frame


class Evaluations:
    """The lab's evaluations: start, watch, cancel, resume after a restart, results."""

    def __init__(self, textgen: TextGen) -> None:
        self.textgen = textgen
        self.store = textgen.runs
        self.progress: dict[str, Progress] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Python scorers of this process's evaluations (a function cannot be stored).
        self._functions: dict[str, scorers.Scorer] = {}
        self._stopping = False  # the lab is stopping: runs stay `running`, to resume

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, spec: EvaluationSpec) -> str:
        """Record the evaluation and start it in the background; its id."""
        for config in spec.configs:
            self.textgen.models.check_servable(config.model)  # unknown model: a 404 now
        experiment = f"eval-{uuid.uuid4().hex[:12]}"
        await self.store.save_experiment({
            "id": experiment, "kind": "evaluation", "name": spec.name or experiment,
            "created": time.time(), "status": "running", "error": None, "spec": spec.to_json(),
            "total": spec.total, "finished": None,
        })
        if callable(spec.scorer):
            self._functions[experiment] = spec.scorer
        self._launch(experiment, spec)
        return experiment

    async def resume(self) -> None:
        """At start: go on with the evaluations a stopped lab left running."""
        with contextlib.suppress(TextGenError):
            for row in await self.store.experiments(kind="evaluation", status="running"):
                spec = EvaluationSpec.from_json(row["spec"])
                if row["spec"].get("scorer") == {"name": "python"}:
                    await self.store.update_experiment(
                        row["id"], status="failed", finished=time.time(),
                        error="Its Python scorer lived in the process that stopped: run it "
                              "again from the notebook.")
                    continue
                log.info("resuming evaluation %s", row["id"])
                self._launch(row["id"], spec)

    async def cancel(self, experiment: str) -> None:
        """Stop an evaluation; what was scored stays. One that has ended keeps its status."""
        row = await self.store.experiment(experiment)  # 404 for an unknown one
        task = self._tasks.get(experiment)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif row["status"] == "running":  # left running by a lab that stopped
            await self.store.update_experiment(experiment, status="cancelled",
                                               finished=time.time())

    async def close(self) -> None:
        """The lab is stopping: stop the runs, leaving them `running` to resume next start."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait(self, experiment: str, *, show_progress: bool = False) -> dict[str, Any]:
        """Wait for an evaluation of this process to end (with a tqdm bar in a notebook); its
        record."""
        task, progress = self._tasks.get(experiment), self.progress.get(experiment)
        if task is None:
            return await self.status(experiment)
        if not (show_progress and progress is not None):
            await asyncio.wait({task})
            return await self.status(experiment)
        from tqdm.auto import tqdm

        with tqdm(total=progress.total, desc=experiment) as bar:
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)  # the bar's refresh, not a wait for it
                bar.update(progress.done - bar.n)
        return await self.status(experiment)

    async def status(self, experiment: str) -> dict[str, Any]:
        row = await self.store.experiment(experiment)
        progress = self.progress.get(experiment)
        done = progress.done if progress is not None else len(await self.store.scores(experiment))
        return {**{k: v for k, v in row.items() if k != "spec"}, "done": done,
                "failed": progress.failed if progress is not None else None}

    def _launch(self, experiment: str, spec: EvaluationSpec) -> None:
        task = asyncio.create_task(self._run(experiment, spec), name=f"evaluation {experiment}")
        self._tasks[experiment] = task
        task.add_done_callback(lambda _: self._tasks.pop(experiment, None))

    # --- running ----------------------------------------------------------------------------

    async def _run(self, experiment: str, spec: EvaluationSpec) -> None:
        status, error = "done", None
        try:
            if spec.lm_eval_task is not None:
                from .lm_eval_tasks import run_task

                self.progress[experiment] = Progress(total=len(spec.configs))
                for index, config in enumerate(spec.configs):
                    if await self._has_scores(experiment, config):
                        self.progress[experiment].step(True)
                        continue
                    rows = await run_task(self.textgen, experiment, index, config, spec)
                    await self.store.add_scores(rows)
                    self.progress[experiment].step(True)
            else:
                await self._run_items(experiment, spec)
        except asyncio.CancelledError:
            if self._stopping:
                raise  # left `running`: the next start resumes it
            status = "cancelled"
        except TextGenError as exc:
            status, error = "failed", exc.message
        except Exception as exc:  # a bug or lm-eval's own failure: say so on the record
            log.exception("evaluation %s failed", experiment)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        await self.store.update_experiment(experiment, status=status, error=error,
                                           finished=time.time())

    async def _has_scores(self, experiment: str, config: Config) -> bool:
        return any(r["config"] == config.label for r in await self.store.scores(experiment))

    async def _run_items(self, experiment: str, spec: EvaluationSpec) -> None:
        assert spec.items is not None
        done = {(r["config"], r["item"]) for r in await self.store.scores(experiment)}
        progress = self.progress[experiment] = Progress(total=spec.total, done=len(done))
        chosen = self._functions.get(experiment) or scorers.scorer(spec.scorer)
        todo = [(index, config, item) for index, config in enumerate(spec.configs)
                for item in spec.items if (config.label, item.id) not in done]
        queue: asyncio.Queue[tuple[int, Config, Item]] = asyncio.Queue()
        for job in todo:
            queue.put_nowait(job)

        async def worker() -> None:
            while not queue.empty():
                index, config, item = queue.get_nowait()
                row = await self._one(experiment, index, config, item, spec, chosen)
                # Written at once: what is scored is never asked again after a restart.
                await self.store.add_scores([row])
                progress.step(row["status"] == "ok")

        workers = [asyncio.create_task(worker()) for _ in range(min(spec.concurrency, len(todo)))]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _one(self, experiment: str, index: int, config: Config, item: Item,
                   spec: EvaluationSpec, chosen: scorers.Scorer | str) -> dict[str, Any]:
        request_id = f"{experiment}-{index}-{item.id}-{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        row: dict[str, Any] = {"experiment": experiment, "config": config.label, "item": item.id,
                               "request_id": request_id, "output": "", "score": None,
                               "status": "ok", "seconds": 0.0, "completion_tokens": 0}
        for attempt in itertools.count():
            try:
                await self._answer(row, experiment, request_id, config, item, spec, chosen)
                break
            except _PASSING as exc:
                # The lab is busy or the model is on its way: the item waits, as a client
                # honouring Retry-After would, instead of being scored as a failure.
                if attempt >= _RETRIES:
                    row["status"], row["output"] = exc.code, exc.message
                    break
                await asyncio.sleep(min(float(getattr(exc, "retry_after", 1.0) or 1.0), 10.0))
            except TextGenError as exc:
                row["status"], row["output"] = exc.code, exc.message
                break
        row["seconds"] = time.monotonic() - started
        return row

    async def _answer(self, row: dict[str, Any], experiment: str, request_id: str,
                      config: Config, item: Item, spec: EvaluationSpec,
                      chosen: scorers.Scorer | str) -> None:
        if chosen == scorers.CHOICE:
            best = await self._choose(experiment, request_id, config, item)
            assert item.choices is not None
            row["output"] = item.choices[best]
            row["score"] = float(best == item.answer)
            return
        assert callable(chosen)
        response = await self.textgen.complete(
            self._request(experiment, request_id, config, item, spec))
        row["output"] = _text(response)
        row["completion_tokens"] = int((response.get("usage") or {}).get(
            "completion_tokens") or 0)
        row["score"] = chosen(item, row["output"])

    def _request(self, experiment: str, request_id: str, config: Config, item: Item,
                 spec: EvaluationSpec) -> OpenAIRequest:
        body: dict[str, Any] = {"model": config.model, "max_tokens": spec.max_tokens,
                                "temperature": 0, **config.settings}
        if spec.route == "chat":
            messages = item.messages or [{"role": "user", "content": item.prompt}]
            if config.system:
                messages = [{"role": "system", "content": config.system}, *messages]
            body["messages"] = messages
        else:
            if item.prompt is None:
                raise InvalidRequest(f"Item {item.id} is a conversation: evaluate it on the "
                                     "chat route.", param="route")
            body["prompt"] = (config.system + "\n\n" if config.system else "") + item.prompt
        return OpenAIRequest(spec.route, body, request_id=request_id, record="evaluation",
                             experiment=experiment)

    async def _choose(self, experiment: str, request_id: str, config: Config,
                      item: Item) -> int:
        """The choice with the highest log-likelihood after the prompt, as lm-eval computes
        it: the context's and each continuation's tokens, one echo request scoring them all."""
        assert item.prompt is not None and item.choices is not None
        context = (config.system + "\n\n" if config.system else "") + item.prompt
        # lm-eval's rule: the context's trailing spaces belong to each continuation.
        stripped = context.rstrip()
        spaces = context[len(stripped):]
        ctx_ids = await self._tokens(config.model, stripped)  # the same for every choice
        prompts = [ctx_ids + await self._tokens(config.model, spaces + " " + choice)
                   for choice in item.choices]
        body = {"model": config.model, "prompt": prompts, "max_tokens": 1, "temperature": 0,
                "logprobs": 1, "echo": True}
        response = await self.textgen.complete(OpenAIRequest(
            "completions", body, request_id=request_id, record="evaluation",
            experiment=experiment))
        scores = []
        for choice in sorted(response["choices"], key=lambda c: c["index"]):
            logprobs = choice["logprobs"]["token_logprobs"]
            scores.append(sum(logprobs[len(ctx_ids):-1]))
        return max(range(len(scores)), key=scores.__getitem__)

    async def _tokens(self, model: str, text: str) -> list[int]:
        tokenized = await self.textgen.tokenize("/tokenize", {
            "model": model, "prompt": text, "add_special_tokens": False})
        return list(tokenized["tokens"])

    # --- results ----------------------------------------------------------------------------

    async def results(self, experiment: str) -> Results:
        row = await self.store.experiment(experiment)
        labels = [Config(**c).label for c in row["spec"]["configs"]]
        items = pd.DataFrame(await self.store.scores(experiment),
                             columns=["experiment", "config", "item", "request_id", "output",
                                      "score", "status", "seconds", "completion_tokens"])
        summary = pd.DataFrame([_summary(label, items[items["config"] == label])
                                for label in labels])
        return Results(summary=summary, items=items.drop(columns=["experiment"]))


def _summary(label: str, rows: pd.DataFrame) -> dict[str, Any]:
    scored = rows["score"].dropna().astype(float)
    low, high = confidence_interval(scored.tolist())
    return {
        "config": label, "items": len(rows), "scored": len(scored),
        "score": float(scored.mean()) if len(scored) else None, "ci_low": low, "ci_high": high,
        "errors": int((rows["status"] != "ok").sum()),
        "mean_seconds": float(rows["seconds"].mean()) if len(rows) else None,
        "p50_seconds": float(rows["seconds"].median()) if len(rows) else None,
        "mean_completion_tokens": float(rows["completion_tokens"].mean()) if len(rows) else None,
    }


def confidence_interval(scores: list[float], z: float = 1.96) -> tuple[float | None, float | None]:
    """95% interval of the mean score: Wilson's for right/wrong scores (it stays inside [0, 1]
    and is right for small n), the normal one for graded scores."""
    n = len(scores)
    if n == 0:
        return None, None
    mean = sum(scores) / n
    if all(s in (0.0, 1.0) for s in scores):
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)
    if n == 1:
        return mean, mean
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    half = z * sd / math.sqrt(n)
    return mean - half, mean + half


def _text(response: dict[str, Any]) -> str:
    choice = (response.get("choices") or [{}])[0]
    if "text" in choice:
        return str(choice.get("text") or "")
    return str((choice.get("message") or {}).get("content") or "")

