"""One row's model, loss and optimizer (ours, PEFT prompt tuning, LoRA, full fine-tuning, the ablations), and a step."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from softprompt.config import Precision
from softprompt.devices import autocast
from softprompt.errors import SoftPromptError
from softprompt.model import SoftPromptModel
from softprompt.surgery import enable_checkpointing, fuse_gelu

from .measure import clock
from .plan import STORED, Plan


@dataclass
class Variant:
    row: str
    model: nn.Module
    run: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    """The loss of a batch (the forward row: its logits)."""
    optimizer: torch.optim.Optimizer | None
    trainable: int
    precision: Precision
    steps_done: int = 0
    losses: list[float] = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.row.split("/")[0]


def prompt_tuning_config(plan: Plan):
    from peft import PromptTuningConfig

    return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=plan.prompt_length)


def lora_config(plan: Plan):
    from peft import LoraConfig

    # GPT-2's c_attn is a Conv1D (weight stored [in, out]), hence fan_in_fan_out.
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=plan.lora_r,
        lora_alpha=2 * plan.lora_r,
        lora_dropout=0.0,
        target_modules=["c_attn"],
        fan_in_fan_out=True,
    )


def peft_prompt_model(base: nn.Module, prompt: torch.Tensor, plan: Plan) -> nn.Module:
    from peft import get_peft_model

    model = get_peft_model(base, prompt_tuning_config(plan))
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.copy_(prompt)
    return model.eval()  # dropout off in the base, as ours


def build_variant(
    row: str,
    base: nn.Module,
    prompt: torch.Tensor,
    plan: Plan,
    own_base: bool = False,
    fused_base: nn.Module | None = None,
) -> Variant:
    """One row's model, loss function and AdamW.

    `base` is the model as loaded (GPT-2's gelu_new unfused), what PEFT, LoRA and full fine-tuning get.
    ours/forward run on `fused_base` (the library's default, model.fused_gelu: true), or on a fused copy
    of `base` when it is not given. full/lora/ours-gelunew take a copy of `base` unless `own_base`.
    """
    method, precision = row.split("/")
    if method == "ours-gelunew":
        model = SoftPromptModel(base, prompt)  # as model.fused_gelu: false loads it
        model.train()

        def run(b):
            return model(**b).loss

    elif method in ("ours", "forward", "ours-ckpt", "ours-bf16base"):
        if fused_base is None or method in ("ours-ckpt", "ours-bf16base"):  # they change the base: never a shared one
            fused_base = fuse_gelu(base if own_base else copy.deepcopy(base))
        if method == "ours-ckpt":
            enable_checkpointing(fused_base)  # as train.gradient_checkpointing: true
        if method in STORED:  # as model.dtype: bf16 (from the same fp32 weights, rounded)
            fused_base.to(STORED[method])
        model = SoftPromptModel(fused_base, prompt)
        model.train(method != "forward")  # the frozen base keeps dropout off either way

        def run(b):
            return model(**b).loss if method != "forward" else model(b["input_ids"], b["attention_mask"]).logits

    elif method == "peft":
        model = peft_prompt_model(base, prompt, plan)

        def run(b):
            return model(**b).loss

    elif method in ("full", "lora"):
        model = base if own_base else copy.deepcopy(base)
        if method == "full":
            model.requires_grad_(True)
        else:
            from peft import get_peft_model

            model.requires_grad_(False)
            model = get_peft_model(model, lora_config(plan))
        model.eval()  # dropout off, as the prompt-tuning rows

        def run(b):
            return model(**b).loss

    else:
        raise SoftPromptError(f"unknown benchmark row '{row}'")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = None if method == "forward" else torch.optim.AdamW(params, lr=plan.lr, weight_decay=0.0)
    return Variant(row, model, run, optimizer, sum(p.numel() for p in params), Precision(precision))


def train_step(v: Variant, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """One step (forward, backward, AdamW, zero_grad) or, for the forward row, one no-grad forward pass."""
    t0 = clock(device)
    if v.optimizer is None:
        with torch.no_grad(), autocast(device, v.precision):
            v.run(batch)
        return {"forward": clock(device) - t0, "backward": 0.0, "optimizer": 0.0}
    with autocast(device, v.precision):
        loss = v.run(batch)
    t1 = clock(device)
    loss.backward()
    t2 = clock(device)
    v.optimizer.step()
    v.optimizer.zero_grad(set_to_none=True)
    t3 = clock(device)
    v.losses.append(loss.item())
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}


def turn(v: Variant, batches: list, device: torch.device, steps: int) -> dict[str, float]:
    """`steps` consecutive steps of one variant; each variant walks the same batch sequence."""
    total = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0, "tokens": 0}
    for _ in range(steps):
        batch = batches[v.steps_done % len(batches)]
        v.steps_done += 1
        for k, t in train_step(v, batch, device).items():
            total[k] += t
        total["tokens"] += int(batch["attention_mask"].sum())
    return total
