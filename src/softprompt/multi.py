"""One frozen base model, many soft prompts, one batch.

Many tasks at once: each row of a mixed batch names its task, gets that
task's prompt after its left padding, and the whole batch decodes together
(Hugging Face generate, one forward pass per new token):

    multi = MultiPromptModel.from_checkpoints(base, {"qna": "checkpoints/qna/epoch_009",
                                                     "sum": "checkpoints/sum/epoch_009"})
    new = multi.generate(input_ids, attention_mask, tasks=["sum", "qna", "sum"], max_new_tokens=64)

Prompt ensembling (Lester et al. 2021, section 6): K prompts for one task run
as K rows per example; at each step their next-token log-probabilities are
averaged and the argmax is appended to all K rows (greedy):

    new = ensemble_generate(base, load_prompts(base, [ckpt_a, ckpt_b, ckpt_c]),
                            input_ids, attention_mask, max_new_tokens=32, eos_token_id=eos)
    new = PromptEnsemble(base, prompts).generate(input_ids, attention_mask, 32, eos)   # the same, as predict calls it

Shapes: input_ids, attention_mask [B, L], left-padded as data.generation_batch
makes them; each prompt [P_k, H]; results [B, T], new tokens only, T <=
max_new_tokens. Each row's output equals what SoftPromptModel.generate gives
for that row and prompt alone.

Prompts may differ in length. The stack is as long as the longest, P; a
shorter prompt sits at its end, and the unused slots in front of it are
masked out like left padding. Position ids come from the mask, so every row
still sees its prompt at positions 0..P_k-1, as in training.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SoftPromptError
from .model import SoftPromptModel, insert_prompt
from .prompt_file import read_prompt


def load_prompts(
    base: nn.Module, directories: Sequence[str | Path], base_id: str | None = None, check_base: bool = True
) -> list[torch.Tensor]:
    """The prompts [P_k, H] saved in `directories` (checkpoints, prompt or PEFT adapter folders).

    Each goes through SoftPromptModel.load_prompt, so a prompt for another
    hidden size or base model is the same clear error as there.
    """
    hidden = base.get_input_embeddings().weight.shape[1]
    holder = SoftPromptModel(base, torch.zeros(1, hidden), base_id=base_id)
    prompts = []
    for directory in directories:
        if read_prompt(directory)[1].get("method") == "prefix_tuning":
            raise SoftPromptError(
                f"{directory}: a prefix_tuning prompt cannot join a mixed-task batch or an ensemble (they stack "
                "input vectors); evaluate it on its own"
            )
        holder.load_prompt(directory, check_base=check_base)
        prompts.append(holder.prompt.detach().clone())
    return prompts


def stack_prompts(prompts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, P, H] fp32 with each prompt at the end of its row, lengths [N]) for prompts [P_k, H]."""
    if not prompts:
        raise SoftPromptError("no prompts given")
    shapes = [tuple(p.shape) for p in prompts]
    sizes = {s[-1] for s in shapes}
    if len(sizes) > 1 or any(len(s) != 2 for s in shapes):
        raise SoftPromptError(f"prompts must all be [P, H] with one hidden size; got {shapes}")
    longest = max(p.shape[0] for p in prompts)
    stack = torch.zeros(len(prompts), longest, sizes.pop(), device=prompts[0].device)
    for i, p in enumerate(prompts):
        stack[i, longest - p.shape[0] :] = p.detach().float()
    lengths = torch.tensor([p.shape[0] for p in prompts], device=prompts[0].device)
    return stack, lengths


def prompted_inputs(
    base: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompts: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs_embeds [B, P+L, H], mask [B, P+L], position_ids) with row i's prompt prompts[i] [P, H].

    As SoftPromptModel._inputs, plus the unused front of a shorter prompt
    (P - lengths[i] slots) masked out.
    """
    embeds = base.get_input_embeddings()(input_ids)
    embeds, mask = insert_prompt(embeds, attention_mask, prompts.to(embeds.dtype))
    n_pad = (attention_mask.cumsum(-1) == 0).sum(-1, keepdim=True)
    pos = torch.arange(mask.shape[1], device=mask.device)
    unused = (pos >= n_pad) & (pos < n_pad + prompts.shape[1] - lengths.unsqueeze(-1))
    mask = mask.masked_fill(unused, 0)
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return embeds, mask, position_ids


class MultiPromptModel(nn.Module):
    """A frozen `base` and named prompts [P_k, H]; `generate` takes each row's task name."""

    def __init__(self, base: nn.Module, prompts: dict[str, torch.Tensor], base_id: str | None = None):
        super().__init__()
        if not prompts:
            raise SoftPromptError("MultiPromptModel needs at least one named prompt")
        self.base = base
        self.base.requires_grad_(False)
        self.base.train(False)
        self.base_id = base_id or getattr(base.config, "_name_or_path", "")
        self.names = list(prompts)
        stack, lengths = stack_prompts(list(prompts.values()))
        device = base.get_input_embeddings().weight.device
        self.register_buffer("prompts", stack.to(device), persistent=False)
        self.register_buffer("lengths", lengths.to(device), persistent=False)

    @classmethod
    def from_checkpoints(
        cls, base: nn.Module, checkpoints: dict[str, str | Path], base_id: str | None = None, check_base: bool = True
    ) -> MultiPromptModel:
        """Name -> checkpoint (or prompt or PEFT adapter) folder, checked against `base` as load_prompt does."""
        loaded = load_prompts(base, list(checkpoints.values()), base_id, check_base)
        return cls(base, dict(zip(checkpoints, loaded, strict=False)), base_id=base_id)

    def task_index(self, tasks: Sequence[str]) -> torch.Tensor:
        unknown = sorted({t for t in tasks if t not in self.names})
        if unknown:
            raise SoftPromptError(f"no prompt named {', '.join(unknown)}; this model has {', '.join(self.names)}")
        return torch.tensor([self.names.index(t) for t in tasks], device=self.prompts.device)

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tasks: Sequence[str], **generation_kwargs: Any
    ) -> torch.Tensor:
        """New tokens only, [B, T]; row i uses the prompt named tasks[i]; KV-cached, one forward per step."""
        if len(tasks) != input_ids.shape[0]:
            raise SoftPromptError(f"{len(tasks)} task names for a batch of {input_ids.shape[0]} rows")
        idx = self.task_index(tasks)
        embeds, mask, _ = prompted_inputs(self.base, input_ids, attention_mask, self.prompts[idx], self.lengths[idx])
        # Hugging Face's generate derives position ids from the mask (cumsum - 1), as prompted_inputs does.
        generation_kwargs.setdefault("pad_token_id", self.base.config.eos_token_id)
        return self.base.generate(inputs_embeds=embeds, attention_mask=mask, **generation_kwargs)


class PromptEnsemble(nn.Module):
    """A frozen `base` and K prompts [P_k, H] of one task, decoded together by `ensemble_generate` (greedy)."""

    def __init__(self, base: nn.Module, prompts: Sequence[torch.Tensor]):
        super().__init__()
        if not prompts:
            raise SoftPromptError("an ensemble needs one prompt or more")
        self.base = base
        self.prompts = list(prompts)

    @property
    def prompt_length(self) -> int:
        """The stack's length: the longest prompt's (a shorter one is masked in front, see the module docstring)."""
        return max(p.shape[0] for p in self.prompts)

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | Sequence[int] | None,
        pad_token_id: int | None = None,
        num_beams: int = 1,
        do_sample: bool = False,
    ) -> torch.Tensor:
        """New tokens only, [B, T]; the log-probabilities of the K prompts averaged at every greedy step."""
        if num_beams != 1 or do_sample:
            raise SoftPromptError(f"an ensemble decodes greedily (got num_beams {num_beams}, do_sample {do_sample})")
        return ensemble_generate(
            self.base, self.prompts, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id
        )


@torch.no_grad()
def ensemble_generate(
    base: nn.Module,
    prompts: Sequence[torch.Tensor],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int | None = None,
) -> torch.Tensor:
    """Greedy decoding with K prompts averaged per step: new tokens [B, T], T <= max_new_tokens.

    An example stops at its first EOS (kept, as Hugging Face's generate
    keeps it) and is padded with `pad_token_id` (default: the first EOS id)
    after that; decoding ends when every example has stopped.
    """
    B, K = input_ids.shape[0], len(prompts)
    stack, lengths = stack_prompts([p.to(input_ids.device) for p in prompts])
    # Row b*K + k is example b with prompt k.
    rows_ids = input_ids.repeat_interleave(K, 0)
    rows_mask = attention_mask.repeat_interleave(K, 0)
    embeds, mask, position_ids = prompted_inputs(base, rows_ids, rows_mask, stack.repeat(B, 1, 1), lengths.repeat(B))
    stop = torch.tensor(
        [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id),
        dtype=torch.long,
        device=input_ids.device,
    )
    pad = pad_token_id if pad_token_id is not None else int(stop[0]) if len(stop) else 0
    # Only the last position's logits are needed; not all models take logits_to_keep.
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}

    out = base(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=True, **last_only)
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    new = []
    for step in range(max_new_tokens):
        logprobs = F.log_softmax(out.logits[:, -1].float(), dim=-1).view(B, K, -1).mean(1)
        token = logprobs.argmax(-1).masked_fill(done, pad)
        new.append(token)
        done |= torch.isin(token, stop)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        # The new token sits at the next position the mask counts; every row sees it.
        position_ids = mask.long().sum(-1, keepdim=True)
        mask = torch.cat([mask, mask.new_ones(B * K, 1)], dim=-1)
        out = base(
            input_ids=token.repeat_interleave(K).unsqueeze(-1),
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=out.past_key_values,
            use_cache=True,
            **last_only,
        )
    return torch.stack(new, dim=1) if new else input_ids.new_zeros(B, 0)
