"""A small LoRA adapter for a local model, written here in PEFT's format (no download).

`adapter_config.json` + `adapter_model.safetensors`, with random A and B for `q_proj` and
`v_proj` of every layer, sized from the base model's `config.json`. PEFT initialises B at zero
(an adapter that changes nothing); B gets values here, large enough (`scale`) that the greedy
text moves away from the base model's (notes/lora-on-cpu.md: N(0, 0.2) changes it completely).
"""

from __future__ import annotations

import json
from pathlib import Path

TARGETS = ("q_proj", "v_proj")


def make_adapter(folder: Path, base: Path, *, rank: int = 8, seed: int = 0, scale: float = 0.2,
                 base_name: str | None = None) -> Path:
    """Write an adapter for the model in `base` into `folder` and return `folder`."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((base / "config.json").read_text())
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    outputs = {"q_proj": config["num_attention_heads"] * head_dim,
               "v_proj": config["num_key_value_heads"] * head_dim}
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for target in TARGETS:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(
                rank, hidden, generator=generator) * scale
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(
                outputs[target], rank, generator=generator) * scale
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank * 2,
        "lora_dropout": 0.0, "target_modules": list(TARGETS), "bias": "none",
        "fan_in_fan_out": False, "base_model_name_or_path": base_name or str(base),
    }, indent=2))
    return folder
