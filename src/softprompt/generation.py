"""Batched generation: token-id sources in, prediction texts out, in the order given.

    opts = DecodeOptions(batch_size=8)                      # greedy; num_beams > 1: beam search
    texts = predict(model, tokenizer, sources, task, limits, opts)          # limits: one token limit per row
    texts = predict(Unprompted(base), tokenizer, sources, task, limits, opts)   # no soft prompt (a baseline)
    texts = predict(PromptEnsemble(base, prompts), tokenizer, sources, task, limits, opts)   # averaged prompts
    texts = predict_mixed(multi, tokenizer, sources, tasks, limits, opts)   # row i reads tasks[i]'s prompt

Sources are sorted by length so a batch holds similar lengths, left-padded
([B, T] input_ids and attention_mask), and decoded with the KV cache; every row
stops at EOS or at its own token limit, so a prediction does not depend on
which rows share its batch. A prediction is the new text up to EOS, cut at the
first newline where its task says so (Task.stop_at_newline), and stripped.

`predict` can skip rows already done and report each finished batch
(`on_batch`), which is how evaluation streams predictions to disk and resumes:
the batches are planned over all rows first, so a resumed run decodes exactly
the batches an uninterrupted one would. `share=(rank, world)` decodes every
world-th planned batch from the rank's on (how torchrun ranks split an
evaluation, see parallel.py): sorted longest first, interleaved batches give
each rank a like mix of lengths, and every batch is one the single process
decodes, so each prediction is the single process's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import Precision
from .data import generation_batch
from .devices import autocast
from .hub import context_window
from .model import SoftPromptModel
from .multi import MultiPromptModel, PromptEnsemble
from .tasks import Task

OnBatch = Callable[[list[int], list[str]], None]
"""Called after each batch with its row indices and their predictions."""
Share = tuple[int, int]
"""(rank, world): decode the planned batches rank, rank + world, ...; (0, 1): all of them."""


class Unprompted(nn.Module):
    """The frozen base without a soft prompt, as the baselines decode: `generate` returns the new tokens only,
    as SoftPromptModel.generate does."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        # From input_ids HF generate returns input + new tokens and takes position ids from the mask.
        return self.base.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[:, input_ids.shape[1] :]


Prompted = SoftPromptModel | Unprompted | PromptEnsemble
"""What `predict` decodes with: each applies the prompt (or none) in its own generate."""


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """How predictions are decoded; the same options on the same rows give the same predictions."""

    batch_size: int | None = None
    """Rows per generation batch; None: the config's train.eval_batch_size."""
    max_new_tokens: int | None = None
    """One token limit for every row; None: the task's own (Task.new_tokens of data.max_target_tokens)."""
    num_beams: int = 1
    """1: greedy; more: beam search of that width."""

    def __post_init__(self) -> None:
        bad = [
            f"{k} must be at least 1, got {v}" for k, v in dataclasses.asdict(self).items() if v is not None and v < 1
        ]
        if bad:
            raise ValueError("; ".join(bad))


def predict(
    model: Prompted,
    tokenizer,
    sources: list[list[int]],
    task: Task,
    limits: list[int],
    opts: DecodeOptions,
    *,
    precision: Precision = Precision.FP32,
    progress: bool = True,
    skip: Collection[int] = (),
    on_batch: OnBatch | None = None,
    share: Share = (0, 1),
) -> list[str | None]:
    """Predictions for token-id sources (None for the rows of batches wholly in `skip`, or not in `share`).

    `model` applies the prompt as its generate does: a SoftPromptModel puts its own prompt in front, an
    Unprompted base reads the sources alone (a baseline's text prefix is already in them), and a
    multi.PromptEnsemble averages several prompts (greedy only).
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    kwargs = dict(num_beams=opts.num_beams, do_sample=False, eos_token_id=eos, pad_token_id=pad)

    def generate(idx: list[int], batch: dict[str, torch.Tensor], limit: int) -> torch.Tensor:
        return model.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=limit, **kwargs)

    model.eval()
    _check_limits(limits, sources)
    batches = share_of([b for b in length_batches(sources, opts.batch_size) if not set(b) <= set(skip)], share)
    decode = lambda i, row: decode_tokens(row, tokenizer, eos, task.stop_at_newline)  # noqa: E731
    device = next(model.parameters()).device
    bar = dict(desc=f"generating {task.name}", disable=not progress)
    return _generate_batched(sources, limits, batches, generate, decode, pad, device, precision, on_batch, bar)


def predict_mixed(
    model: MultiPromptModel,
    tokenizer,
    sources: list[list[int]],
    tasks: list[Task],
    limits: list[int],
    opts: DecodeOptions,
    *,
    precision: Precision = Precision.FP32,
    progress: bool = True,
    on_batch: OnBatch | None = None,
    share: Share = (0, 1),
) -> list[str | None]:
    """Predictions for a stream of several tasks' sources (None for rows not in `share`); row i uses the prompt
    named tasks[i].name.

    Batches mix tasks (sorted by source length only); each row keeps its own token limit and its own
    task's newline rule, so it reads as `predict` on that task alone would make it.
    """
    if len(tasks) != len(sources):
        raise ValueError(f"{len(tasks)} tasks for {len(sources)} sources")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    def generate(idx: list[int], batch: dict[str, torch.Tensor], limit: int) -> torch.Tensor:
        names = [tasks[i].name for i in idx]
        kwargs = dict(
            max_new_tokens=limit, num_beams=opts.num_beams, do_sample=False, eos_token_id=eos, pad_token_id=pad
        )
        return model.generate(batch["input_ids"], batch["attention_mask"], tasks=names, **kwargs)

    _check_limits(limits, sources)
    # Every row of a batch decodes for the batch's longest limit, so each must have that much room left in the
    # context window after its prompt and source (a long qna source has room for 24 tokens, not sum's 64).
    window, lengths = context_window(model.base), model.lengths[model.task_index([t.name for t in tasks])].tolist()
    room = [window - p - len(s) for p, s in zip(lengths, sources, strict=True)]
    batches = share_of(mixed_batches([len(s) for s in sources], limits, room, opts.batch_size), share)
    decode = lambda i, row: decode_tokens(row, tokenizer, eos, tasks[i].stop_at_newline)  # noqa: E731
    device = model.prompts.device
    bar = dict(desc="generating all tasks", disable=not progress)
    return _generate_batched(sources, limits, batches, generate, decode, pad, device, precision, on_batch, bar)


def _check_limits(limits: list[int], sources: list[list[int]]) -> None:
    if len(limits) != len(sources):
        raise ValueError(f"{len(limits)} token limits for {len(sources)} sources")


def length_batches(sources: list[list[int]], batch_size: int) -> list[list[int]]:
    """Row indices in batches of batch_size, longest source first."""
    # Longest first: similar lengths share a batch, and running out of memory shows up at once.
    order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def share_of(batches: list[list[int]], share: Share) -> list[list[int]]:
    """The planned batches a rank decodes: every world-th from its rank on (see the module docstring)."""
    rank, world = share
    return batches[rank::world]


def mixed_batches(lengths: list[int], limits: list[int], room: list[int], batch_size: int) -> list[list[int]]:
    """Batches of similar lengths, as length_batches, in which every row has room for the batch's longest limit.

    Rows are taken longest first; each joins the first unfilled batch that
    stays within every member's room, else opens a new one.
    """
    filling: list[list[int]] = []
    full: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        batch = next((b for b in filling if min(room[j] for j in (*b, i)) >= max(limits[j] for j in (*b, i))), None)
        if batch is None:
            batch = []
            filling.append(batch)
        batch.append(i)
        if len(batch) == batch_size:
            filling.remove(batch)
            full.append(batch)
    return full + filling


def _generate_batched(sources, limits, batches, generate, decode, pad, device, precision, on_batch, bar):
    """Predictions per source (None where no batch holds it), generated batch by batch (lists of row indices).

    generate(idx, batch, limit) -> new token ids [B, <= limit]; decode(i, ids) -> row i's text;
    bar: tqdm's desc and disable (None: shown where stderr is a terminal).
    """
    out: list[str | None] = [None] * len(sources)
    bar = {**bar, "disable": True if bar["disable"] else None}
    for idx in tqdm(batches, leave=False, dynamic_ncols=True, **bar):
        batch = generation_batch([sources[i] for i in idx], pad)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, precision):
            new = generate(idx, batch, max(limits[i] for i in idx))
        texts = [decode(i, row[: limits[i]]) for row, i in zip(new.tolist(), idx, strict=True)]
        for i, text in zip(idx, texts, strict=True):
            out[i] = text
        if on_batch is not None:
            on_batch(idx, texts)
    return out


def decode_tokens(ids: list[int], tokenizer, eos: int, stop_at_newline: bool) -> str:
    """The text of generated token ids: up to the first EOS (and the first newline where the task stops there)."""
    if eos in ids:
        ids = ids[: ids.index(eos)]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if stop_at_newline:
        text = text.split("\n", 1)[0]
    return text.strip()
