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
    ModelNotReady,
    RateLimited,
    TextGenError,
)
from . import scorers
from .datasets import Item
from .item_requests import choose, item_request
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
        self._starting: set[str] = set()  # being recorded by `start`: this lab's already
        self._finishing: set[str] = set()  # writing their end: their claims are not renewed
        self._resuming = False  # the lab is ready: take up evaluations no lab holds
        self.resume_passes = 0  # looks at what no lab holds so far (for whoever waits on one)
        self._watch: asyncio.Task[None] | None = None
        # Python scorers of this process's evaluations (a function cannot be stored).
        self._functions: dict[str, scorers.Scorer] = {}
        self._stopping = False  # the lab is stopping: runs stay `running`, to resume

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, spec: EvaluationSpec) -> str:
        """Record the evaluation and start it in the background; its id."""
        for config in spec.configs:
            self.textgen.models.check_servable(config.model)  # unknown model: a 404 now
        experiment = f"eval-{uuid.uuid4().hex[:12]}"
        self._starting.add(experiment)  # claimed by this lab from its first write
        try:
            await self.store.save_experiment({
                "id": experiment, "kind": "evaluation", "name": spec.name or experiment,
                "created": time.time(), "status": "running", "error": None,
                "spec": spec.to_json(), "total": spec.total, "finished": None,
                "lease_owner": self.owner, "lease_until": time.time() + self.lease,
            })
            if callable(spec.scorer):
                self._functions[experiment] = spec.scorer
            self._launch(experiment, spec)
        finally:
            self._starting.discard(experiment)
        return experiment

    def start_watching(self) -> None:
        """From the lab's start to its close: renew the claims on the evaluations this lab runs,
        stop one whose claim it lost, and take up those whose lab stopped (once `resume` has
        run, when the lab is ready)."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_forever(), name="evaluation claims")

    async def resume(self) -> None:
        """Go on with the evaluations no lab holds: left running by a lab that stopped (this
        one's last start, or a replica on the same database), once their claim is released or
        has lapsed."""
        self._resuming = True
        with contextlib.suppress(TextGenError):
            for row in await self.store.claimable_experiments("evaluation"):
                await self._take_up(row)
        self.resume_passes += 1

    def _ours(self, experiment: str) -> bool:
        return experiment in self._tasks or experiment in self._starting

    async def _take_up(self, row: dict[str, Any]) -> None:
        experiment = row["id"]
        if self._stopping or self._ours(experiment):
            return
        if not await self.store.claim_experiment(experiment, self.owner, self.lease):
            return  # another lab got there first
        if self._stopping or self._ours(experiment):  # (while the claim was on its way)
            return
        self._lost.discard(experiment)
        try:
            spec = EvaluationSpec.from_json(row["spec"])
        except Exception as exc:  # a definition this lab cannot read (a newer lab's, say)
            await self.store.end_experiment(
                experiment, self.owner, status="failed", finished=time.time(),
                error=f"Its definition cannot be read here ({type(exc).__name__}: {exc}).")
            return
        if row["spec"].get("scorer") == {"name": "python"} and experiment not in self._functions:
            await self.store.end_experiment(
                experiment, self.owner, status="failed", finished=time.time(),
                error="Its Python scorer lived in the process that stopped: run it again from "
                      "the notebook.")
            return
        log.info("resuming evaluation %s", experiment)
        self._launch(experiment, spec)

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self._renew()
                if self._resuming:
                    await self.resume()
            except Exception:  # never end the renewals: the claims would lapse under live runs
                log.exception("evaluation claims: a pass failed")

    async def _renew(self) -> None:
        """Renew this lab's claims; stop a run whose claim is gone (cancelled by another lab,
        or taken over after this lab was too slow to renew), writing nothing."""
        for experiment, task in list(self._tasks.items()):
            if experiment in self._finishing or task.done():
                continue
            try:
                held = await self.store.claim_experiment(experiment, self.owner, self.lease)
            except TextGenError:
                continue  # the database is down: the runs wait in its buffer meanwhile
            if not held and experiment not in self._finishing and not task.done():
                log.info("evaluation %s: its claim is gone (ended or taken over elsewhere); "
                         "stopping here", experiment)
                self._lost.add(experiment)
                self.progress.pop(experiment, None)  # its state is the database's now
                task.cancel()

    async def cancel(self, experiment: str) -> None:
        """Stop an evaluation; what was scored stays. One that has ended keeps its status."""
        row = await self.store.experiment(experiment)  # 404 for an unknown one
        task = self._tasks.get(experiment)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        elif row["status"] == "running":  # run by another lab (it stops at its next renewal)
            await self.store.end_experiment(experiment, None, status="cancelled",
                                            finished=time.time())

    async def close(self) -> None:
        """The lab is stopping: stop the runs, leaving them `running` and unclaimed, for the
        next lab (or another replica) to go on with at once."""
        self._stopping = True
        if self._watch is not None:  # first: no pass may claim or launch from here on
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
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

        def ended(done: asyncio.Task[None]) -> None:
            if self._tasks.get(experiment) is done:
                del self._tasks[experiment]

        task.add_done_callback(ended)

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
        # Only while this lab holds it: cancelled or taken over elsewhere meanwhile, the end
        # is the other lab's to write.
        self._finishing.add(experiment)
        try:
            await self.store.end_experiment(experiment, self.owner, status=status, error=error,
                                            finished=time.time())
        finally:
            self._finishing.discard(experiment)

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
            best = await choose(self.textgen, experiment, request_id, config, item)
            assert item.choices is not None
            row["output"] = item.choices[best]
            row["score"] = float(best == item.answer)
            return
        assert callable(chosen)
        response = await self.textgen.complete(
            item_request(experiment, request_id, config, item, spec))
        row["output"] = _text(response)
        row["completion_tokens"] = int((response.get("usage") or {}).get(
            "completion_tokens") or 0)
        row["score"] = chosen(item, row["output"])

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

