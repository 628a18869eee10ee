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
to bench.json (every raw number) and bench.md (tables and the targets, each
with pass/miss and the measured ratio).

This module runs the parts in order; each lives in the module named for what
it holds: plan.py (rows, shapes, modes), workload.py (seeded model and
inputs), variants.py (each row's model and step), training.py, memory.py,
generation.py, storage.py (the measurements), measure.py (machine, clocks,
peak memory), targets.py (the goals) and markdown.py (bench.md).
eval_speed.py is the evaluation benchmark (scripts/bench_eval.py).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from softprompt.devices import pick_device
from softprompt.errors import SoftPromptError

from .generation import bench_generation
from .markdown import render_markdown
from .measure import machine_info
from .memory import bench_memory
from .plan import Plan
from .storage import bench_storage
from .targets import targets
from .training import bench_training
from .workload import make_base, make_prompt


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
    (out_dir / "bench.md").write_text(render_markdown(results), encoding="utf-8")
    say(f"wrote {out_dir / 'bench.md'} and {out_dir / 'bench.json'} in {results['wall_s']:.0f} s")
    return results
