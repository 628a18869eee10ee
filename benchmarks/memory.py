"""Peak training memory, one fresh subprocess per row (CPU: peak RSS; CUDA: max allocated)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from softprompt.errors import SoftPromptError

from .measure import peak_bytes
from .plan import STORED, TRAINED, Plan, Shape
from .variants import build_variant, turn
from .workload import make_base, make_batches, make_prompt

MEMORY_MARK = "BENCH_MEMORY "


ROOT = Path(__file__).resolve().parents[1]


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
    built = peak_bytes(device)
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
    turn(v, batches, device, plan.memory_steps)
    print(MEMORY_MARK + json.dumps({"peak_bytes": peak_bytes(device), "after_build_bytes": built}), flush=True)


def bench_memory(plan: Plan, device: torch.device, log) -> dict:
    rows = plan.memory_rows or [r for r in plan.rows[plan.memory_shape] if r.split("/")[0] in TRAINED]
    plan_dict = {**asdict(plan), "shapes": [asdict(s) for s in plan.shapes]}
    # The child finds this package from the repository root: benchmarks/ is not installed with the library.
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]); "
        "from benchmarks.memory import memory_child; memory_child(sys.argv[1])"
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
