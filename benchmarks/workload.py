"""The seeded inputs every row sees: GPT-2 with random weights, the prompt, training batches, generation sources."""

from __future__ import annotations

import torch
from torch import nn

from softprompt.data import training_batch
from softprompt.model import init_prompt

from .plan import Plan, Shape


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
