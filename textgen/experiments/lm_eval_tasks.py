"""lm-evaluation-harness tasks, run by lm-eval itself through the lab's pipeline.

The model lm-eval drives is its own `local-completions` (or `local-chat-completions`) client
with one change: instead of POSTing each request to a URL, it hands the same body to the lab's
pipeline in this process (limits, cache, metrics; each request a kept run of the evaluation).
So the prompts, the token boundaries, the log-likelihood sums and the metrics are lm-eval's
code, and the lab's numbers equal what lm-eval reports against the lab's HTTP API.

lm-eval is synchronous: it runs in a worker thread and waits on the lab's event loop for each
answer. Its request cache (`use_cache`, in LAB_DATA_DIR) lets a configuration interrupted by a
restart pick up where it stopped.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequest
from ..request import OpenAIRequest

if TYPE_CHECKING:
    from ..service import TextGen
    from .spec import Config, EvaluationSpec


async def run_task(textgen: TextGen, experiment: str, index: int, config: Config,
                   spec: EvaluationSpec) -> list[dict[str, Any]]:
    """Run `spec.lm_eval_task` for one configuration; one score row per document."""
    folder = textgen.models.local_folder(_base(textgen, config.model))
    if folder is None:
        raise InvalidRequest(f"lm-eval tasks need the tokenizer of '{config.model}' on this "
                             "machine: evaluate an in-process model (or one in MODEL_PATHS).",
                             param="configs")
    loop = asyncio.get_running_loop()
    cache = textgen.settings.LAB_DATA_DIR.expanduser() / "lm-eval-cache" / experiment / str(index)
    stop = threading.Event()
    try:
        return await asyncio.to_thread(_evaluate, textgen, loop, experiment, config, spec,
                                       folder, cache, stop)
    except asyncio.CancelledError:
        # A thread cannot be cancelled: lm-eval's stops at its next request instead of going
        # on beside the lab that took the evaluation over (or after a cancel).
        stop.set()
        raise


class EvaluationStopped(Exception):
    """Raised in lm-eval's thread at its next request once its evaluation is stopped."""


def _base(textgen: TextGen, model: str) -> str:
    """An adapter's tokenizer is its base model's."""
    return textgen.models.info(model).parent or model


def _evaluate(textgen: TextGen, loop: asyncio.AbstractEventLoop, experiment: str,
              config: Config, spec: EvaluationSpec, folder: Path, cache: Path,
              stop: threading.Event) -> list[dict[str, Any]]:
    try:
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise InvalidRequest("lm-eval tasks need lm-eval installed (pip install "
                             "'lm-eval[api]')", param="dataset") from None
    task = spec.lm_eval_task
    assert task is not None
    manager = TaskManager(include_path=spec.lm_eval_include_path)
    if task not in manager.all_tasks:
        raise InvalidRequest(f"lm-eval has no task named {task!r} (with include_path "
                             f"{spec.lm_eval_include_path!r}).", param="dataset")
    model = _lab_model(textgen, loop, experiment, config, spec.route, stop)(
        model=config.model, tokenizer=str(folder), tokenizer_backend="huggingface",
        num_concurrent=1, max_retries=1)
    cache.parent.mkdir(parents=True, exist_ok=True)
    results = simple_evaluate(
        model=model, tasks=[task], task_manager=manager, log_samples=True,
        use_cache=str(cache), apply_chat_template=spec.route == "chat",
        system_instruction=config.system,
    )
    assert results is not None
    metric = results["configs"][task]["metric_list"][0]["metric"]
    rows = []
    for sample in results["samples"][task]:
        responses = sample["filtered_resps"]
        output = responses[0] if isinstance(responses[0], str) else json.dumps(responses)
        rows.append({"experiment": experiment, "config": config.label,
                     "item": str(sample["doc_id"]), "request_id": None, "output": output,
                     "score": float(sample[metric]), "status": "ok", "seconds": 0.0,
                     "completion_tokens": 0})
    return rows


def _lab_model(textgen: TextGen, loop: asyncio.AbstractEventLoop, experiment: str,
               config: Config, route: str, stop: threading.Event) -> Any:
    """lm-eval's own API client class, answering through the lab instead of over HTTP."""
    from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

    base = LocalChatCompletion if route == "chat" else LocalCompletionsAPI

    class LabModel(base):  # type: ignore[misc, valid-type]
        def model_call(self, messages: Any, *, generate: bool = True,
                       gen_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
            if stop.is_set():
                raise EvaluationStopped(f"evaluation {experiment} was stopped")
            # What lm-eval's model_call builds and POSTs, built the same way.
            payload = self._create_payload(
                self.create_message(messages), generate=generate,
                gen_kwargs=copy.deepcopy(gen_kwargs), seed=self._seed, eos=self.eos_string,
                **kwargs)
            if generate:
                payload.update(config.settings)  # a configuration's settings win
            request = OpenAIRequest(
                "chat" if route == "chat" else "completions", payload, record="evaluation",
                experiment=experiment, request_id=f"{experiment}-{uuid.uuid4().hex[:12]}")
            return asyncio.run_coroutine_threadsafe(textgen.complete(request), loop).result()

    return LabModel
