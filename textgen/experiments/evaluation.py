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
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from .results import Results
from .spec import Config, EvaluationSpec

if TYPE_CHECKING:
    from ..service import TextGen

log = logging.getLogger(__name__)

# Refusals that pass (a busy engine, a limit, a model loading): an item waits and retries.
_PASSING = (RateLimited, EngineOverloaded, ModelNotReady, GenerationInterrupted, BackendDown)
_RETRIES = 60
# An experiment's columns its status leaves out: the definition, and which lab holds it.
_UNSHOWN = ("spec", "lease_owner", "lease_until")


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0

    def step(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1


class Evaluations:
    """The lab's evaluations: start, watch, cancel, resume after a restart, results."""

    def __init__(self, textgen: TextGen) -> None:
        self.textgen = textgen
        self.store = textgen.runs
        self.progress: dict[str, Progress] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Who this lab is to the others on the same database, and how long its claim on an
        # evaluation it runs holds unless renewed (a lab that dies stops renewing).
        self.owner = f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lease = textgen.settings.EVALUATION_LEASE_SECONDS
        self._lost: set[str] = set()  # claims taken over or ended elsewhere: stop, write nothing
        self._resuming = False  # the lab is ready: take up evaluations no lab holds
        self.resume_passes = 0  # looks at what no lab holds so far (for whoever waits on one)
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
            "lease_owner": self.owner, "lease_until": time.time() + self.lease,
        })
        if callable(spec.scorer):
            self._functions[experiment] = spec.scorer
        self._launch(experiment, spec)
        return experiment

    async def resume(self) -> None:
        """Go on with the evaluations no lab holds: left running by a lab that stopped (this
        one's last start, or a replica on the same database), once their claim is released or
        has lapsed. Called when the lab is ready, then by `watch` for as long as it runs."""
        self._resuming = True
        if self._stopping:
            return
        with contextlib.suppress(TextGenError):
            for row in await self.store.experiments(kind="evaluation", status="running"):
                if row["id"] in self._tasks:
                    continue  # this lab runs it (started while the lab got ready, say)
                if not await self.store.claim_experiment(row["id"], self.owner, self.lease):
                    continue  # another lab runs it
                self._lost.discard(row["id"])
                if row["spec"].get("scorer") == {"name": "python"}:
                    await self.store.update_experiment(
                        row["id"], status="failed", finished=time.time(), lease_owner=None,
                        lease_until=None,
                        error="Its Python scorer lived in the process that stopped: run it "
                              "again from the notebook.")
                    continue
                log.info("resuming evaluation %s", row["id"])
                self._launch(row["id"], EvaluationSpec.from_json(row["spec"]))
        self.resume_passes += 1

    async def watch(self) -> None:
        """For as long as the lab runs: renew the claims on the evaluations it runs, stop one
        whose claim it lost (cancelled by another lab, or taken over after this lab was too
        slow to renew), and take up those whose lab stopped (`resume`, once the lab is ready)."""
        while True:
            await asyncio.sleep(self.lease / 3)
            for experiment, task in list(self._tasks.items()):
                try:
                    held = await self.store.claim_experiment(experiment, self.owner, self.lease)
                except TextGenError:
                    continue  # the database is down: the runs wait in its buffer meanwhile
                if not held and not task.done():
                    log.info("evaluation %s: its claim is gone (ended or taken over "
                             "elsewhere); stopping here", experiment)
                    self._lost.add(experiment)
                    task.cancel()
            if self._resuming:
                await self.resume()

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
        """The lab is stopping: stop the runs, leaving them `running` and unclaimed, for the
        next lab (or another replica) to go on with at once."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TextGenError):
            await self.store.release_experiments(self.owner)

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

    def running(self) -> set[str]:
        """The evaluations this lab runs now (another lab may run others of the database's)."""
        return set(self._tasks)

    async def status(self, experiment: str) -> dict[str, Any]:
        row = await self.store.experiment(experiment)
        progress = self.progress.get(experiment)
        done = progress.done if progress is not None else len(await self.store.scores(experiment))
        return {**shown(row), "done": done,
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
            if self._stopping or experiment in self._lost:
                raise  # left `running` for the next start, or ended elsewhere: not ours to say
            status = "cancelled"
        except TextGenError as exc:
            status, error = "failed", exc.message
        except Exception as exc:  # a bug or lm-eval's own failure: say so on the record
            log.exception("evaluation %s failed", experiment)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        await self.store.update_experiment(experiment, status=status, error=error,
                                           finished=time.time(), lease_owner=None,
                                           lease_until=None)

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
        return Results.of(labels, await self.store.scores(experiment), row["spec"]["configs"])


def shown(row: dict[str, Any]) -> dict[str, Any]:
    """An experiment's record as the lab shows it: not its definition, nor who holds it."""
    return {k: v for k, v in row.items() if k not in _UNSHOWN}


def _text(response: dict[str, Any]) -> str:
    choice = (response.get("choices") or [{}])[0]
    if "text" in choice:
        return str(choice.get("text") or "")
    return str((choice.get("message") or {}).get("content") or "")

