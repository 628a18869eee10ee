"""Generation speed: our batched KV-cached decoding against PEFT's generate and a no-cache loop."""

from __future__ import annotations

import copy
import math
import statistics

import torch
from torch import nn

from softprompt.data import generation_batch
from softprompt.model import SoftPromptModel
from softprompt.surgery import fuse_gelu

from .measure import clock
from .plan import Plan
from .variants import peft_prompt_model
from .workload import make_sources


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
            t0 = clock(device)
            outs = run_ours(batches) if name == "ours" else run_peft(batches)
            times[name].append(clock(device) - t0)
            if name == "ours":
                ours_out = outs
            log(f"[generate] repeat {r + 1}/{plan.gen_repeats} {name}: {times[name][-1]:.2f} s")
    new_tokens = {i: ours_out[g][j].tolist() for g, grp in enumerate(groups) for j, i in enumerate(grp)}
    assert all(len(t) == T for t in new_tokens.values())
    picks, naive, naive_s = _no_cache_loop(plan, ours, sources, order, eos, device, log)
    n, k = len(sources), len(picks)
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


def _no_cache_loop(plan: Plan, ours: SoftPromptModel, sources, order, eos: int, device: torch.device, log):
    """(picked rows, their tokens, seconds) of the no-cache loop on a few examples at evenly spaced lengths
    (shortest to longest): it takes minutes per example on a real model."""
    k = min(plan.naive_examples, len(order))
    picks = (
        [order[round(j * (len(order) - 1) / max(1, k - 1))] for j in range(k)] if k > 1 else [order[len(order) // 2]]
    )
    t0 = clock(device)
    naive = {i: naive_generate(ours, sources[i], plan.gen_new_tokens, eos, device) for i in picks}
    naive_s = clock(device) - t0
    log(f"[generate] no-cache loop: {k} example(s) in {naive_s:.2f} s")
    return picks, naive, naive_s
