"""How the lab starts vLLM's engine: the options it takes from Settings, the `vllm serve`
command line they make (parsed by vLLM's own parser), the environment vLLM reads, and what
identifies the weights it serves (part of the cache key)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings import Settings

# Files whose size and time identify the weights, tokenizer and template behind a model.
_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.json", "*.jinja", "tokenizer.model")


@dataclass(frozen=True, slots=True)
class VllmOptions:
    """The engine flags of the seed's `vllm serve` example, from Settings, plus per-model flags."""

    dtype: str = "auto"
    max_model_len: int | None = 2048
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    gpu_memory_utilization: float = 0.90
    max_num_batched_tokens: int | None = 8192
    enforce_eager: bool | None = None
    cpu_kvcache_gb: int = 1
    # Nice value of the engine's processes (the engine core and its workers), not the lab's.
    niceness: int = 0
    # LoRA: on when a largest rank is given (vLLM's --enable-lora --max-lora-rank --max-loras).
    max_lora_rank: int | None = None
    max_loras: int = 1
    # More `vllm serve` flags for this model (tool-call parser, chat template, ...).
    serve_args: tuple[str, ...] = ()

    @classmethod
    def of(cls, s: Settings, serve_args: tuple[str, ...]) -> VllmOptions:
        """The options Settings give every engine, with one model's own serve flags."""
        return cls(
            dtype=s.DTYPE,
            max_model_len=s.MAX_MODEL_LEN,
            tensor_parallel_size=s.TENSOR_PARALLEL_SIZE,
            pipeline_parallel_size=s.PIPELINE_PARALLEL_SIZE,
            distributed_executor_backend=s.DISTRIBUTED_EXECUTOR_BACKEND,
            gpu_memory_utilization=s.GPU_MEMORY_UTILIZATION,
            max_num_batched_tokens=s.MAX_NUM_BATCHED_TOKENS,
            enforce_eager=s.ENFORCE_EAGER,
            cpu_kvcache_gb=s.VLLM_CPU_KVCACHE_SPACE,
            niceness=s.ENGINE_NICENESS,
            max_lora_rank=s.MAX_LORA_RANK if s.ENABLE_LORA else None,
            max_loras=s.MAX_LORAS,
            serve_args=serve_args,
        )


def prepare_environment(options: VllmOptions) -> None:
    # vLLM reads these from the environment (also in its spawned engine-core process). The lab
    # never downloads weights: a model that is not on disk must fail at once, not hang.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(options.cpu_kvcache_gb))


def serve_argv(model_id: str, folder: Path, options: VllmOptions) -> list[str]:
    """The `vllm serve` command line for one model: the seed's flags, then the model's own."""
    from vllm.platforms import current_platform

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
    argv = [
        "--model", str(folder), "--tokenizer", str(folder),
        "--served-model-name", model_id,
        "--dtype", dtype,
        "--tensor-parallel-size", str(options.tensor_parallel_size),
        "--pipeline-parallel-size", str(options.pipeline_parallel_size),
        "--gpu-memory-utilization", str(options.gpu_memory_utilization),
    ]
    if options.distributed_executor_backend:
        argv += ["--distributed-executor-backend", options.distributed_executor_backend]
    if options.max_model_len:
        argv += ["--max-model-len", str(options.max_model_len)]
    if options.max_num_batched_tokens:
        argv += ["--max-num-batched-tokens", str(options.max_num_batched_tokens)]
    if enforce_eager:
        argv.append("--enforce-eager")
    if options.max_lora_rank:
        argv += ["--enable-lora", "--max-lora-rank", str(options.max_lora_rank),
                 "--max-loras", str(options.max_loras)]
    return argv + list(options.serve_args)


def parse_serve_args(argv: list[str]) -> Any:
    """vLLM's own parser and checks for `vllm serve` flags; a bad flag is a ValueError."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve", exit_on_error=False))
    try:
        args = parser.parse_args(argv)
        validate_parsed_serve_args(args)
    except SystemExit:  # argparse's way of refusing, after printing why to stderr
        raise ValueError(f"vLLM refused the serve flags {' '.join(argv)!r}") from None
    except Exception as exc:
        raise ValueError(f"vLLM refused the serve flags: {exc}") from exc
    return args


def weights_identity(folder: Path, argv: list[str]) -> str:
    """A digest of the model folder's files (names, sizes, times) and the serve flags."""
    digest = hashlib.sha256(str(folder.resolve()).encode())
    for pattern in _WEIGHT_FILES:
        for path in sorted(folder.glob(pattern)):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update("\0".join(argv).encode())
    return digest.hexdigest()[:32]


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags

