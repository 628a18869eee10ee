"""Benchmark: our prompt tuning beside PEFT's, LoRA and full fine-tuning, on GPT-2-small's shape.

    python scripts/bench.py --quick        # every row once; about 5 minutes on 2 idle CPU cores
    python scripts/bench.py                # the full run: both shapes for every row, 3 repeats

Everything runs offline on `GPT2LMHeadModel(GPT2Config())` with seeded random
weights (speed does not depend on the weights' values), in one process, on the
same seeded batches for every variant: a warm-up turn first, then timed turns
taken round-robin (the order reversed every other repeat), so machine drift hits
every variant alike; step times are medians over the repeats.

Rows, named method/precision:
    ours/*     SoftPromptModel, target-only logits, GELU fused (what scripts/train.py runs by default)
    peft/*     PEFT prompt tuning, same prompt (copied in), same labels, dropout off, the model as loaded
    forward/*  a no-grad full-logits forward pass of ours over the same batch
    full/fp32  full fine-tuning, AdamW on all weights
    lora/fp32  PEFT LoRA, r=8 on c_attn
    ours-gelunew/fp32  ours with model.fused_gelu: false, to show what the fused GELU adds
    ours-ckpt/fp32     ours with train.gradient_checkpointing: true
    ours-bf16base/bf16 ours with the frozen base stored in bf16 (model.dtype: bf16), under bf16 autocast
bf16 rows run under torch.autocast(bfloat16), as train.precision=bf16 does.

`--rows` times only the rows named (at the shapes the plan has them) and measures their memory, skipping
generation and storage, and files the figures into the existing bench.json under "subset" with their own
ours/fp32 yardstick, so a few rows can be re-measured without re-running (and re-timing) the rest.

Shapes: a training batch is input_ids / attention_mask / labels [B, S + T]
(right-padded; labels on the T target tokens only) with S ~ 400 source and
T <= 64 target tokens; the prompt adds P = 4 positions. Peak memory comes from a
fresh subprocess per variant (CPU: peak RSS; CUDA: max allocated). Results go
to bench.json (every raw number) and bench.md (tables and the targets of the
performance issue, each with pass/miss and the measured ratio).
"""

from __future__ import annotations

import copy
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from softprompt import __version__
from softprompt.config import Precision
from softprompt.data import generation_batch, training_batch
from softprompt.devices import autocast, pick_device
from softprompt.errors import SoftPromptError
from softprompt.model import SoftPromptModel, init_prompt
from softprompt.surgery import enable_checkpointing, fuse_gelu

ROWS = ("ours/fp32", "peft/fp32", "forward/fp32", "full/fp32", "lora/fp32", "ours/bf16", "peft/bf16", "forward/bf16")
ABLATIONS = ("ours-gelunew/fp32", "ours-ckpt/fp32", "ours-bf16base/bf16")
"""Rows that switch one library default (fused GELU) or option (gradient checkpointing, the base's storage
dtype) to show what it does (see build_variant); only the storage row has targets of its own."""
TRAINED = ("ours", "peft", "full", "lora", "ours-gelunew", "ours-ckpt", "ours-bf16base")
STORED = {"ours-bf16base": torch.bfloat16}
"""Methods whose frozen base is stored in another dtype than fp32 (model.dtype)."""
SANITY_TOLERANCE = 1e-4
MEMORY_MARK = "BENCH_MEMORY "
ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = dict(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=512, bos_token_id=511, eos_token_id=511)


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    source: int
    """Mean source length; each example draws uniformly from +-10% of it."""
    target: int
    """Longest target, EOS included; each example draws from [3/4 of it, it]."""


@dataclass(frozen=True)
class Plan:
    """What one run measures. `make_plan` fills it for the full, quick and tiny modes."""

    mode: str
    model: dict[str, Any]
    """GPT2Config keyword arguments; empty for GPT-2 small (124 M parameters)."""
    shapes: tuple[Shape, ...]
    rows: dict[str, tuple[str, ...]]
    """Rows timed at each shape (by shape name)."""
    warmup: dict[str, int]
    """Untimed steps per row before the timed repeats, by shape name. The first shape's warm-up also
    warms the process (thread pools, kernel caches), so quick mode skips the second's."""
    repeats: int
    """Timed repeats per variant and shape; reported step times are their medians."""
    steps: int
    """Training steps per timed repeat (its time divided by this is one step)."""
    memory_shape: str
    memory_steps: int
    """Steps each memory subprocess runs, after allocating the AdamW state (so one step reaches the steady peak)."""
    gen_examples: int
    gen_batch: int
    gen_new_tokens: int
    gen_source: int
    """Generation sources draw their lengths uniformly from [gen_source / 4, gen_source]."""
    gen_repeats: int
    naive_examples: int
    """Examples the no-cache loop runs (at evenly spaced lengths): it takes minutes per example."""
    memory_rows: tuple[str, ...] | None = None
    """Rows measured in memory subprocesses (None: every trained row at memory_shape)."""
    memory_parallel: bool = False
    """Run the memory subprocesses at once (tiny mode only: on a real model they would compete for the cores)."""
    threads: int | None = None
    """torch threads (None: torch's default, one per core). Tiny mode uses 1: its steps are too small to share."""
    prompt_length: int = 4
    lr: float = 1e-3
    seed: int = 0
    lora_r: int = 8
    only: tuple[str, ...] | None = None
    """--rows: the rows this run re-measures (None: all of the mode's)."""

    @property
    def throughput(self) -> Shape:
        """The shape the targets are judged at: the largest batch timed."""
        return max(self.shapes, key=lambda s: s.batch)


def make_plan(
    mode: str = "full", steps: int | None = None, repeats: int | None = None, only: tuple[str, ...] | None = None
) -> Plan:
    """The plan for mode full | quick | tiny, with optional overrides of steps and repeats; `only`: just these
    rows, wherever the mode times them (see the module docstring)."""
    reference, throughput = Shape("reference", 2, 400, 64), Shape("throughput", 8, 400, 64)
    every = {reference.name: ROWS + ABLATIONS, throughput.name: ROWS + ABLATIONS}
    if mode == "full":
        plan = Plan(
            mode,
            {},
            (reference, throughput),
            every,
            warmup={reference.name: 1, throughput.name: 1},
            repeats=3,
            steps=1,
            memory_shape=throughput.name,
            memory_steps=2,
            gen_examples=32,
            gen_batch=8,
            gen_new_tokens=64,
            gen_source=400,
            gen_repeats=2,
            naive_examples=2,
        )
    elif mode == "quick":
        # Every row once, within ~5 minutes on 2 cores: the rows the targets need (fp32 ours, PEFT, forward,
        # full) at the throughput shape, the others (and ours/fp32 again, as their yardstick) at the reference
        # shape, which runs first and is the only warm-up; one repeat; memory at the reference shape;
        # generation on 8 of the 32 examples.
        rows = {
            reference.name: ("ours/fp32", "lora/fp32", "ours/bf16", "peft/bf16", "forward/bf16", "ours-bf16base/bf16"),
            throughput.name: ("ours/fp32", "peft/fp32", "forward/fp32", "full/fp32", *ABLATIONS),
        }
        plan = Plan(
            mode,
            {},
            (reference, throughput),
            rows,
            warmup={reference.name: 1, throughput.name: 0},
            repeats=1,
            steps=1,
            memory_shape=reference.name,
            memory_steps=1,
            memory_rows=("ours/fp32", "peft/fp32", "full/fp32", "lora/fp32", *ABLATIONS),
            gen_examples=8,
            gen_batch=8,
            gen_new_tokens=64,
            gen_source=400,
            gen_repeats=1,
            naive_examples=1,
        )
    elif mode == "tiny":
        plan = Plan(
            mode,
            TINY_MODEL,
            (replace(reference, source=40, target=8), replace(throughput, source=40, target=8)),
            every,
            warmup={reference.name: 1, throughput.name: 1},
            repeats=1,
            steps=1,
            memory_shape=throughput.name,
            memory_steps=1,
            gen_examples=4,
            gen_batch=2,
            gen_new_tokens=4,
            gen_source=40,
            gen_repeats=1,
            naive_examples=1,
            memory_rows=("ours/fp32", "peft/fp32", "ours-bf16base/bf16"),
            memory_parallel=True,
            threads=1,
        )
    else:
        raise SoftPromptError(f"benchmark mode must be full, quick or tiny, not '{mode}'")
    if steps is not None:
        plan = replace(plan, steps=steps)
    if repeats is not None:
        plan = replace(plan, repeats=repeats, gen_repeats=repeats)
    if plan.steps < 1 or plan.repeats < 1:
        raise SoftPromptError(f"--steps and --repeats must be at least 1 (got {plan.steps} and {plan.repeats})")
    if only is not None:
        plan = _only(plan, tuple(only))
    return plan


def _only(plan: Plan, only: tuple[str, ...]) -> Plan:
    timed = {r for rows in plan.rows.values() for r in rows}
    if unknown := [r for r in only if r not in timed]:
        raise SoftPromptError(
            f"--rows: {', '.join(unknown)} not timed in {plan.mode} mode (rows: {', '.join(sorted(timed))})"
        )
    rows = {name: tuple(r for r in rs if r in only) for name, rs in plan.rows.items()}
    memory = plan.memory_rows or [r for r in plan.rows[plan.memory_shape] if r.split("/")[0] in TRAINED]
    return replace(
        plan,
        shapes=tuple(s for s in plan.shapes if rows[s.name]),
        rows={k: v for k, v in rows.items() if v},
        memory_rows=tuple(r for r in memory if r in only),
        only=only,
    )


# ------------------------------------------------------------------ machine and data


def machine_info(device: torch.device) -> dict[str, Any]:
    import peft
    import transformers

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu in ("", platform.processor() or platform.machine()):
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_bf16_features": [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags],
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "softprompt": __version__,
        "python": platform.python_version(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def make_base(plan: Plan, dtype: torch.dtype = torch.float32) -> nn.Module:
    """GPT-2 (small unless the plan says otherwise) with seeded random weights, eval mode (dropout off).

    Built in `dtype` directly, as from_pretrained(dtype=...) loads it: a bf16 base never has fp32 weights.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(plan.seed)
    return GPT2LMHeadModel._from_config(GPT2Config(**plan.model), dtype=dtype).eval()


def make_prompt(base: nn.Module, plan: Plan) -> torch.Tensor:
    return init_prompt(base, None, "vocab", plan.prompt_length, seed=plan.seed)


def make_batches(plan: Plan, shape: Shape, eos: int, n: int = 4) -> list[dict[str, torch.Tensor]]:
    """n seeded training batches of `shape` (token ids below `eos`), built by the library's training_batch."""
    gen = torch.Generator().manual_seed(plan.seed * 1000 + shape.batch)
    lo, hi = round(shape.source * 0.9), round(shape.source * 1.1)
    batches = []
    for _ in range(n):
        rows = []
        for _ in range(shape.batch):
            s = int(torch.randint(lo, hi + 1, (1,), generator=gen))
            t = int(torch.randint(max(2, shape.target * 3 // 4), shape.target + 1, (1,), generator=gen))
            ids = torch.randint(0, eos, (s + t - 1,), generator=gen).tolist()
            rows.append({"source_ids": ids[:s], "target_ids": ids[s:] + [eos]})
        batches.append(training_batch(rows, eos))
    return batches


def make_sources(plan: Plan, eos: int) -> list[list[int]]:
    """Generation sources of mixed lengths, uniformly in [gen_source / 4, gen_source]."""
    gen = torch.Generator().manual_seed(plan.seed + 7)
    lengths = torch.randint(plan.gen_source // 4, plan.gen_source + 1, (plan.gen_examples,), generator=gen)
    return [torch.randint(0, eos, (int(n),), generator=gen).tolist() for n in lengths]


# ------------------------------------------------------------------ variants


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


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels run asynchronously; time what they did
    return time.perf_counter()


def train_step(v: Variant, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """One step (forward, backward, AdamW, zero_grad) or, for the forward row, one no-grad forward pass."""
    t0 = _clock(device)
    if v.optimizer is None:
        with torch.no_grad(), autocast(device, v.precision):
            v.run(batch)
        return {"forward": _clock(device) - t0, "backward": 0.0, "optimizer": 0.0}
    with autocast(device, v.precision):
        loss = v.run(batch)
    t1 = _clock(device)
    loss.backward()
    t2 = _clock(device)
    v.optimizer.step()
    v.optimizer.zero_grad(set_to_none=True)
    t3 = _clock(device)
    v.losses.append(loss.item())
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}


def _turn(v: Variant, batches: list, device: torch.device, steps: int) -> dict[str, float]:
    """`steps` consecutive steps of one variant; each variant walks the same batch sequence."""
    total = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0, "tokens": 0}
    for _ in range(steps):
        batch = batches[v.steps_done % len(batches)]
        v.steps_done += 1
        for k, t in train_step(v, batch, device).items():
            total[k] += t
        total["tokens"] += int(batch["attention_mask"].sum())
    return total


# ------------------------------------------------------------------ training


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
        _turn(v, batches, device, warmup)
    by_row = {v.row: v for v in variants}
    sanity = None
    timed: dict[str, list[dict]] = {v.row: [] for v in variants}
    for r in range(-1, plan.repeats):
        if r >= 0:
            for v in variants if r % 2 == 0 else variants[::-1]:
                t = _turn(v, batches, device, plan.steps)
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
        reps = timed[v.row]
        seconds = [_step(t, plan) for t in reps]
        out["rows"][v.row] = {
            "trainable_params": v.trainable,
            "step_s": statistics.median(seconds),
            "step_s_repeats": seconds,
            "tokens_per_s": statistics.median(
                t["tokens"] / sum(t[k] for k in ("forward", "backward", "optimizer")) for t in reps
            ),
            **{
                f"{k}_s": statistics.median(t[k] / plan.steps for t in reps)
                for k in ("forward", "backward", "optimizer")
            },
            "losses": v.losses,
        }
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


# ------------------------------------------------------------------ memory (fresh subprocess per variant)


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    # Linux: VmHWM, the peak RSS of this process's own address space. Not ru_maxrss: a child started
    # by vfork + exec (what subprocess does) inherits the parent's peak in ru_maxrss.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def memory_child(spec_json: str) -> None:
    """Entry point of a memory subprocess: build one variant alone, run a few steps, print the peak."""
    spec = json.loads(spec_json)
    plan = Plan(**{**spec["plan"], "shapes": tuple(Shape(**s) for s in spec["plan"]["shapes"])})
    shape = next(s for s in plan.shapes if s.name == plan.memory_shape)
    device = torch.device(spec["device"])
    if plan.threads:
        torch.set_num_threads(plan.threads)
    base = make_base(plan, STORED.get(spec["row"].split("/")[0], torch.float32)).to(device)
    prompt = make_prompt(base, plan)
    cfg = base.config
    batches = [{k: t.to(device) for k, t in b.items()} for b in make_batches(plan, shape, cfg.eos_token_id)]
    v = build_variant(spec["row"], base, prompt, plan, own_base=True)
    built = _peak_bytes(device)
    # AdamW allocates its state in the first step, so the steady-state peak (weights + state + gradients +
    # activations) comes only in the second. Allocating the state first with a zero-gradient step (lr 0:
    # nothing moves) lets one measured step reach it.
    params = [p for g in v.optimizer.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.zeros_like(p)
    lr = [g["lr"] for g in v.optimizer.param_groups]
    for g in v.optimizer.param_groups:
        g["lr"] = 0.0
    v.optimizer.step()
    v.optimizer.zero_grad(set_to_none=True)
    for g, x in zip(v.optimizer.param_groups, lr, strict=True):
        g["lr"] = x
    _turn(v, batches, device, plan.memory_steps)
    print(MEMORY_MARK + json.dumps({"peak_bytes": _peak_bytes(device), "after_build_bytes": built}), flush=True)


def bench_memory(plan: Plan, device: torch.device, log) -> dict:
    rows = plan.memory_rows or [r for r in plan.rows[plan.memory_shape] if r.split("/")[0] in TRAINED]
    plan_dict = {**asdict(plan), "shapes": [asdict(s) for s in plan.shapes]}
    # The child finds this package from the repository root: benchmarks/ is not installed with the library.
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); "
        "from benchmarks.harness import memory_child; memory_child(sys.argv[1])"
    )
    spec = {r: json.dumps({"plan": plan_dict, "row": r, "device": str(device)}) for r in rows}
    cmds = {r: [sys.executable, "-c", code, spec[r], str(ROOT)] for r in rows}
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    log(f"[memory] {len(rows)} fresh subprocesses at the {plan.memory_shape} shape, {plan.memory_steps} step(s) each")
    if plan.memory_parallel:
        procs = {
            r: subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for r, c in cmds.items()
        }
        outputs = {r: p.communicate() + (p.returncode,) for r, p in procs.items()}
    else:
        outputs = {}
        for r, c in cmds.items():
            p = subprocess.run(c, capture_output=True, text=True, env=env)
            outputs[r] = (p.stdout, p.stderr, p.returncode)
    out = {
        "shape": plan.memory_shape,
        "steps": plan.memory_steps,
        "measure": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)",
        "rows": {},
    }
    for r, (stdout, stderr, code) in outputs.items():
        lines = [line for line in stdout.splitlines() if line.startswith(MEMORY_MARK)]
        if code != 0 or not lines:
            raise SoftPromptError(f"the memory subprocess for {r} failed (exit {code}):\n{stderr[-2000:]}")
        out["rows"][r] = json.loads(lines[-1][len(MEMORY_MARK) :])
        log(f"[memory] {r:10s} peak {out['rows'][r]['peak_bytes'] / 2**20:8.0f} MiB")
    return out


# ------------------------------------------------------------------ generation


@torch.no_grad()
def naive_generate(
    model: SoftPromptModel, source: list[int], new_tokens: int, eos: int, device: torch.device
) -> list[int]:
    """The loop many reference repositories use: one example, the whole sequence re-run for every token."""
    ids = torch.tensor([source], device=device)
    out = []
    for _ in range(new_tokens):
        logits = model(ids, torch.ones_like(ids)).logits[0, -1]
        logits[eos] = -math.inf  # as min_new_tokens below: every method makes exactly new_tokens tokens
        token = int(logits.argmax())
        out.append(token)
        ids = torch.cat([ids, torch.tensor([[token]], device=device)], dim=1)
    return out


def bench_generation(plan: Plan, base: nn.Module, prompt: torch.Tensor, device: torch.device, log) -> dict:
    eos = base.config.eos_token_id
    sources = make_sources(plan, eos)
    ours = SoftPromptModel(fuse_gelu(copy.deepcopy(base)), prompt).eval()  # as the library loads it
    peft_model = peft_prompt_model(base, prompt, plan)
    # Sorted by length before batching, as evaluation does: less padding; PEFT gets the same batches.
    order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
    groups = [order[i : i + plan.gen_batch] for i in range(0, len(order), plan.gen_batch)]
    batches = [{k: t.to(device) for k, t in generation_batch([sources[i] for i in g], eos).items()} for g in groups]
    T = plan.gen_new_tokens
    kwargs = dict(max_new_tokens=T, min_new_tokens=T, do_sample=False, pad_token_id=eos)

    def run_ours(bs, **kw):
        return [ours.generate(b["input_ids"], b["attention_mask"], **{**kwargs, **kw}) for b in bs]

    def run_peft(bs, **kw):
        return [
            peft_model.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"], **{**kwargs, **kw})
            for b in bs
        ]

    log(f"[generate] {len(sources)} examples in batches of {plan.gen_batch}, {T} new tokens, warm-up")
    run_ours(batches[-1:], max_new_tokens=2, min_new_tokens=2)
    run_peft(batches[-1:], max_new_tokens=2, min_new_tokens=2)
    times: dict[str, list[float]] = {"ours": [], "peft": []}
    ours_out = None
    for r in range(plan.gen_repeats):
        for name in ("ours", "peft") if r % 2 == 0 else ("peft", "ours"):
            t0 = _clock(device)
            outs = run_ours(batches) if name == "ours" else run_peft(batches)
            times[name].append(_clock(device) - t0)
            if name == "ours":
                ours_out = outs
            log(f"[generate] repeat {r + 1}/{plan.gen_repeats} {name}: {times[name][-1]:.2f} s")
    new_tokens = {i: ours_out[g][j].tolist() for g, grp in enumerate(groups) for j, i in enumerate(grp)}
    assert all(len(t) == T for t in new_tokens.values())
    # The no-cache loop on a few examples at evenly spaced lengths (shortest to longest).
    k = min(plan.naive_examples, len(order))
    picks = (
        [order[round(j * (len(order) - 1) / max(1, k - 1))] for j in range(k)] if k > 1 else [order[len(order) // 2]]
    )
    t0 = _clock(device)
    naive = {i: naive_generate(ours, sources[i], T, eos, device) for i in picks}
    naive_s = _clock(device) - t0
    log(f"[generate] no-cache loop: {k} example(s) in {naive_s:.2f} s")
    n = len(sources)
    ours_s, peft_s = statistics.median(times["ours"]), statistics.median(times["peft"])
    return {
        "examples": n,
        "batch": plan.gen_batch,
        "new_tokens": T,
        "source_lengths": [len(s) for s in sources],
        "ours_s": ours_s,
        "ours_s_repeats": times["ours"],
        "ours_examples_per_s": n / ours_s,
        "peft_s": peft_s,
        "peft_s_repeats": times["peft"],
        "peft_examples_per_s": n / peft_s,
        "naive_examples": k,
        "naive_source_lengths": [len(sources[i]) for i in picks],
        "naive_s": naive_s,
        "naive_examples_per_s": k / naive_s,
        "naive_matches_ours": sum(naive[i] == new_tokens[i] for i in picks),
    }


# ------------------------------------------------------------------ storage


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


# ------------------------------------------------------------------ targets and report


def targets(results: dict) -> list[dict]:
    """The performance issue's targets, each measured as a ratio at the throughput shape."""
    shape = max(results["training"].values(), key=lambda s: s["shape"]["batch"])
    rows = shape["rows"]
    mem, gen, store = results["memory"]["rows"], results["generation"], results["storage"]
    ours = rows["ours/fp32"]["tokens_per_s"]
    checks = [
        ("our training tokens/s ≥ 1.3× PEFT prompt tuning's", ours / rows["peft/fp32"]["tokens_per_s"], ">=", 1.3),
        ("our training tokens/s ≥ 2× full fine-tuning's", ours / rows["full/fp32"]["tokens_per_s"], ">=", 2.0),
        (
            "our step / no-grad full-logits forward ≤ 1.8",
            rows["ours/fp32"]["step_s"] / rows["forward/fp32"]["step_s"],
            "<=",
            1.8,
        ),
        (
            "our peak training memory ≤ PEFT's (ours / PEFT)",
            mem["ours/fp32"]["peak_bytes"] / mem["peft/fp32"]["peak_bytes"],
            "<=",
            1.0,
        ),
        (
            "our generation ≥ 20× the no-cache loop (examples/s)",
            gen["ours_examples_per_s"] / gen["naive_examples_per_s"],
            ">=",
            20.0,
        ),
        (
            "our generation no slower than PEFT's generate (ours / PEFT)",
            gen["ours_examples_per_s"] / gen["peft_examples_per_s"],
            ">=",
            1.0,
        ),
        ("prompt checkpoint < 16 KiB (bytes, safetensors + JSON)", store["ours"]["total_bytes"], "<", 16 * 1024),
    ]
    checks += storage_checks(results.get("subset") or results)
    ok = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}
    return [{"target": t, "measured": m, "goal": f"{c} {g}", "pass": ok[c](m, g)} for t, m, c, g in checks]


def storage_checks(results: dict) -> list[tuple]:
    """model.dtype's targets (issue #11), bf16-stored base against the fp32 base in the same run: memory at
    the memory shape, step time at the largest shape that timed both (judged on a CPU with bf16 units)."""
    row, fp32 = "ours-bf16base/bf16", "ours/fp32"
    mem = results["memory"]["rows"]
    shapes = [s for s in results["training"].values() if row in s["rows"] and fp32 in s["rows"]]
    if row not in mem or fp32 not in mem or not shapes:
        return []
    step = max(shapes, key=lambda s: s["shape"]["batch"])
    return [
        (
            "bf16-stored base: peak training memory ≤ 0.6× the fp32 base's",
            mem[row]["peak_bytes"] / mem[fp32]["peak_bytes"],
            "<=",
            0.6,
        ),
        (
            f"bf16-stored base: step ≤ 0.7× the fp32 base's (batch {step['shape']['batch']})",
            step["rows"][row]["step_s"] / step["rows"][fp32]["step_s"],
            "<=",
            0.7,
        ),
    ]


def run_bench(plan: Plan, out_dir: str | Path, device: str = "auto", command: str = "", log=print) -> dict:
    """Run every part of the plan and write bench.json and bench.md into out_dir."""
    threads = torch.get_num_threads()
    try:
        return _run_bench(plan, out_dir, device, command, log)
    finally:
        torch.set_num_threads(threads)  # the caller's later work (tests in the same process) keeps its threads


def _run_bench(plan: Plan, out_dir: str | Path, device: str, command: str, log) -> dict:
    started = time.time()
    dev = pick_device(device)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    loads: list[float] = []

    def say(msg: str) -> None:
        if hasattr(os, "getloadavg"):
            loads.append(os.getloadavg()[0])  # sampled at every log line: how busy the cores were throughout
        log(f"{time.time() - started:7.1f}s {msg}")

    results: dict[str, Any] = {
        "command": command,
        "plan": {**asdict(plan), "shapes": [asdict(s) for s in plan.shapes]},
        "machine": machine_info(dev),
    }
    say(f"benchmark ({plan.mode}) on {results['machine']['cpu']}, {results['machine']['torch_threads']} threads, {dev}")
    out_dir = Path(out_dir)
    earlier = None
    if plan.only:  # read it first: a missing or unreadable file fails before minutes of measuring
        try:
            earlier = json.loads((out_dir / "bench.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise SoftPromptError(
                f"--rows files its figures into {out_dir / 'bench.json'}, which cannot be read ({err})"
            ) from err
    base = make_base(plan).to(dev)
    prompt = make_prompt(base, plan)
    results["training"] = {s.name: bench_training(plan, s, base, prompt, dev, say) for s in plan.shapes}
    if not plan.only:
        results["generation"] = bench_generation(plan, base, prompt, dev, say)
        results["storage"] = bench_storage(plan, base, prompt)
    del base
    gc.collect()
    results["memory"] = bench_memory(plan, dev, say)
    results["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["machine"]["load_average_during"] = (
        {"min": min(loads), "median": statistics.median(loads), "max": max(loads), "samples": len(loads)}
        if loads
        else None
    )
    results["wall_s"] = time.time() - started
    if earlier is not None:
        earlier["subset"] = results  # the full run's figures stay as they were measured
        results = earlier
    results["targets"] = targets(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    from .markdown import render_markdown  # imported here: markdown imports this module's row names

    (out_dir / "bench.md").write_text(render_markdown(results), encoding="utf-8")
    say(f"wrote {out_dir / 'bench.md'} and {out_dir / 'bench.json'} in {results['wall_s']:.0f} s")
    return results
