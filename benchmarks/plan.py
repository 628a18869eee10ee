"""What a benchmark run measures: the rows (method/precision), the shapes, and the full, quick and tiny plans."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from softprompt.errors import SoftPromptError

ROWS = ("ours/fp32", "peft/fp32", "forward/fp32", "full/fp32", "lora/fp32", "ours/bf16", "peft/bf16", "forward/bf16")


ABLATIONS = ("ours-gelunew/fp32", "ours-ckpt/fp32", "ours-bf16base/bf16")
"""Rows that switch one library default (fused GELU) or option (gradient checkpointing, the base's storage
dtype) to show what it does (see build_variant); only the storage row has targets of its own."""


TRAINED = ("ours", "peft", "full", "lora", "ours-gelunew", "ours-ckpt", "ours-bf16base")


STORED = {"ours-bf16base": torch.bfloat16}
"""Methods whose frozen base is stored in another dtype than fp32 (model.dtype)."""


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


REFERENCE, THROUGHPUT = Shape("reference", 2, 400, 64), Shape("throughput", 8, 400, 64)
"""The reference's batch of 2, and the batch of 8 the targets are judged at."""


def make_plan(
    mode: str = "full", steps: int | None = None, repeats: int | None = None, only: tuple[str, ...] | None = None
) -> Plan:
    """The plan for mode full | quick | tiny, with optional overrides of steps and repeats; `only`: just these
    rows, wherever the mode times them (see the module docstring)."""
    modes = {"full": _full_plan, "quick": _quick_plan, "tiny": _tiny_plan}
    if mode not in modes:
        raise SoftPromptError(f"benchmark mode must be full, quick or tiny, not '{mode}'")
    plan = modes[mode]()
    if steps is not None:
        plan = replace(plan, steps=steps)
    if repeats is not None:
        plan = replace(plan, repeats=repeats, gen_repeats=repeats)
    if plan.steps < 1 or plan.repeats < 1:
        raise SoftPromptError(f"--steps and --repeats must be at least 1 (got {plan.steps} and {plan.repeats})")
    if only is not None:
        plan = _only(plan, tuple(only))
    return plan


def _every_row() -> dict[str, tuple[str, ...]]:
    return {REFERENCE.name: ROWS + ABLATIONS, THROUGHPUT.name: ROWS + ABLATIONS}


def _full_plan() -> Plan:
    """Both shapes for every row, 3 repeats."""
    return Plan(
        "full",
        {},
        (REFERENCE, THROUGHPUT),
        _every_row(),
        warmup={REFERENCE.name: 1, THROUGHPUT.name: 1},
        repeats=3,
        steps=1,
        memory_shape=THROUGHPUT.name,
        memory_steps=2,
        gen_examples=32,
        gen_batch=8,
        gen_new_tokens=64,
        gen_source=400,
        gen_repeats=2,
        naive_examples=2,
    )


def _quick_plan() -> Plan:
    """Every row once, within ~5 minutes on 2 cores: the rows the targets need (fp32 ours, PEFT, forward, full)
    at the throughput shape, the others (and ours/fp32 again, as their yardstick) at the reference shape, which
    runs first and is the only warm-up; one repeat; memory at the reference shape; generation on 8 of the 32
    examples."""
    rows = {
        REFERENCE.name: ("ours/fp32", "lora/fp32", "ours/bf16", "peft/bf16", "forward/bf16", "ours-bf16base/bf16"),
        THROUGHPUT.name: ("ours/fp32", "peft/fp32", "forward/fp32", "full/fp32", *ABLATIONS),
    }
    return Plan(
        "quick",
        {},
        (REFERENCE, THROUGHPUT),
        rows,
        warmup={REFERENCE.name: 1, THROUGHPUT.name: 0},
        repeats=1,
        steps=1,
        memory_shape=REFERENCE.name,
        memory_steps=1,
        memory_rows=("ours/fp32", "peft/fp32", "full/fp32", "lora/fp32", *ABLATIONS),
        gen_examples=8,
        gen_batch=8,
        gen_new_tokens=64,
        gen_source=400,
        gen_repeats=1,
        naive_examples=1,
    )


def _tiny_plan() -> Plan:
    """A 2-layer toy model and short sequences, every row, one thread: seconds (the tests)."""
    return Plan(
        "tiny",
        TINY_MODEL,
        (replace(REFERENCE, source=40, target=8), replace(THROUGHPUT, source=40, target=8)),
        _every_row(),
        warmup={REFERENCE.name: 1, THROUGHPUT.name: 1},
        repeats=1,
        steps=1,
        memory_shape=THROUGHPUT.name,
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
