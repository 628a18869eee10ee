"""Training-step times of the plan's rows at one shape, the ours-vs-PEFT loss check, and fp32-vs-bf16 drift."""

from __future__ import annotations

import copy
import gc
import statistics
from dataclasses import asdict

import torch
from torch import nn

from softprompt.errors import SoftPromptError
from softprompt.model import SoftPromptModel
from softprompt.surgery import fuse_gelu

from .plan import ABLATIONS, Plan, Shape
from .variants import Variant, build_variant, turn
from .workload import make_batches

SANITY_TOLERANCE = 1e-4


def bench_training(plan: Plan, shape: Shape, base: nn.Module, prompt: torch.Tensor, device: torch.device, log) -> dict:
    """Step times of the plan's rows at one shape, plus the fp32/bf16 loss comparison and the PEFT check."""
    cfg = base.config
    batches = [{k: t.to(device) for k, t in b.items()} for b in make_batches(plan, shape, cfg.eos_token_id)]
    rows = plan.rows[shape.name]
    # full/lora copy the base before ours/peft touch it.
    fused = fuse_gelu(copy.deepcopy(base))  # one copy for every ours/forward row; the others get `base` as loaded
    order = sorted(rows, key=lambda r: r.split("/")[0] not in ("full", "lora"))
    variants = [build_variant(r, base, prompt, plan, fused_base=fused) for r in order]
    variants.sort(key=lambda v: rows.index(v.row))
    warmup = plan.warmup[shape.name]
    log(f"[{shape.name}] batch {shape.batch}: warm-up ({warmup} step(s) per row)")
    for v in variants:
        turn(v, batches, device, warmup)
    by_row = {v.row: v for v in variants}
    sanity = None
    timed: dict[str, list[dict]] = {v.row: [] for v in variants}
    for r in range(-1, plan.repeats):
        if r >= 0:
            for v in variants if r % 2 == 0 else variants[::-1]:
                t = turn(v, batches, device, plan.steps)
                timed[v.row].append(t)
                log(f"[{shape.name}] repeat {r + 1}/{plan.repeats} {v.row:13s} {_step(t, plan):8.3f} s/step")
        if sanity is None and "ours/fp32" in by_row and "peft/fp32" in by_row and by_row["ours/fp32"].losses:
            # Fail early: if the two do not compute the same loss, their timings do not compare like with like.
            sanity = peft_sanity(by_row, shape)
            if not sanity["ok"]:
                raise SoftPromptError(
                    f"ours and PEFT disagree on the first batch ({sanity['ours_loss']} vs {sanity['peft_loss']}), "
                    "so they do not compute the same loss"
                )
    out = {"shape": asdict(shape), "padded_length": [int(b["input_ids"].shape[1]) for b in batches], "rows": {}}
    for v in variants:
        out["rows"][v.row] = _row_record(v, timed[v.row], plan)
    if sanity:
        sanity["max_abs_diff_all_steps"] = max(
            abs(a - b) for a, b in zip(by_row["ours/fp32"].losses, by_row["peft/fp32"].losses, strict=True)
        )
        out["peft_sanity"] = sanity
    for row in ABLATIONS:
        if row in by_row and "ours/fp32" in by_row:
            out["rows"][row]["max_abs_loss_diff_vs_ours"] = max(
                abs(a - b) for a, b in zip(by_row[row].losses, by_row["ours/fp32"].losses, strict=True)
            )
    out["precision_drift"] = precision_drift(by_row, batches[0], device)
    del variants, by_row
    gc.collect()
    return out


def _row_record(v: Variant, reps: list[dict], plan: Plan) -> dict:
    """One row's figures: medians over its timed repeats, and every loss it computed."""
    seconds = [_step(t, plan) for t in reps]
    return {
        "trainable_params": v.trainable,
        "step_s": statistics.median(seconds),
        "step_s_repeats": seconds,
        "tokens_per_s": statistics.median(
            t["tokens"] / sum(t[k] for k in ("forward", "backward", "optimizer")) for t in reps
        ),
        **{f"{k}_s": statistics.median(t[k] / plan.steps for t in reps) for k in ("forward", "backward", "optimizer")},
        "losses": v.losses,
    }


def _step(t: dict[str, float], plan: Plan) -> float:
    return (t["forward"] + t["backward"] + t["optimizer"]) / plan.steps


def peft_sanity(by_row: dict[str, Variant], shape: Shape) -> dict:
    """The first step of both ran on batch 0 from the same prompt: their losses must agree."""
    a, b = by_row["ours/fp32"].losses[0], by_row["peft/fp32"].losses[0]
    return {
        "shape": shape.name,
        "ours_loss": a,
        "peft_loss": b,
        "abs_diff": abs(a - b),
        "tolerance": SANITY_TOLERANCE,
        "ok": abs(a - b) <= SANITY_TOLERANCE,
    }


@torch.no_grad()
def precision_drift(by_row: dict[str, Variant], batch: dict, device: torch.device) -> dict:
    """fp32 vs bf16 after the same steps from the same start: per-step losses and the trained prompts."""
    out = {}
    for method in ("ours", "peft"):
        a, b = by_row.get(f"{method}/fp32"), by_row.get(f"{method}/bf16")
        if a is None or b is None:
            continue
        diffs = [abs(x - y) for x, y in zip(a.losses, b.losses, strict=True)]
        pa, pb = (_prompt_of(v) for v in (a, b))
        out[method] = {
            "steps": len(diffs),
            "loss_fp32": a.losses,
            "loss_bf16": b.losses,
            "abs_diff_first_step": diffs[0],
            "abs_diff_last_step": diffs[-1],
            "max_abs_diff": max(diffs),
            "prompt_max_abs_diff": float((pa - pb).abs().max()),
            # Both trained prompts scored in fp32 on batch 0: the drift due to training in bf16 alone.
            "fp32_loss_of_fp32_trained_prompt": float(a.run(batch)),
            "fp32_loss_of_bf16_trained_prompt": float(b.run(batch)),
        }
    return out


def _prompt_of(v: Variant) -> torch.Tensor:
    if isinstance(v.model, SoftPromptModel):
        return v.model.prompt.detach().float()
    return v.model.prompt_encoder["default"].embedding.weight.detach().float()
