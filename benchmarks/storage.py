"""Bytes on disk per task for each method, and its trainable parameter count."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from softprompt import __version__
from softprompt.model import SoftPromptModel

from .plan import Plan
from .variants import lora_config, peft_prompt_model


def _dir_bytes(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()}


def bench_storage(plan: Plan, base: nn.Module, prompt: torch.Tensor) -> dict:
    """Bytes on disk of what each method has to keep per task, and its trainable parameter count."""
    from peft import get_peft_model

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours = SoftPromptModel(base, prompt, base_id="gpt2")
        ours.save_prompt(tmp / "ours", task="sum", init="vocab", softprompt_version=__version__)
        peft_model = peft_prompt_model(base, prompt, plan)
        peft_model.save_pretrained(tmp / "peft")
        lora = get_peft_model(copy.deepcopy(base).requires_grad_(False), lora_config(plan))
        lora.save_pretrained(tmp / "lora")
        base.save_pretrained(tmp / "full")
        counted = {"ours": ours, "peft": peft_model, "lora": lora}
        for name in ("ours", "peft", "lora", "full"):
            files = _dir_bytes(tmp / name)
            weights = sum(v for k, v in files.items() if k.endswith(".safetensors"))
            trainable = (
                sum(p.numel() for p in base.parameters())
                if name == "full"
                else sum(p.numel() for p in counted[name].parameters() if p.requires_grad)
            )
            out[name] = {
                "files": files,
                "weights_bytes": weights,
                "total_bytes": sum(files.values()),
                "trainable_params": trainable,
            }
    return out
