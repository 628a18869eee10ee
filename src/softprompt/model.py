"""A frozen causal LM with a trainable soft prompt in front of its input.

    base = AutoModelForCausalLM.from_pretrained("gpt2")
    model = SoftPromptModel(base, init_prompt(base, tokenizer, "words", 4, "summarize shorten distill short"))
    out = model(input_ids, attention_mask, labels)     # out.loss: mean target-token cross-entropy
    new = model.generate(input_ids, attention_mask, max_new_tokens=32)

Shapes: input_ids, attention_mask, labels [B, L]; prompt [P, H]; the base
model sees inputs_embeds [B, P + L, H] and a mask [B, P + L].

The glue follows PEFT's prompt tuning (mask grows by P ones, labels by P
-100s, prompt embeddings before the token embeddings) with two differences:
the loss applies the LM head only where a label is, and with left padding the
pads stay in front of the prompt and position ids come from the mask, so a
padded row sees exactly what it would see alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from .config import PromptInit
from .errors import SoftPromptError
from .prompt_file import PROMPT_FILE, PROMPT_META, read_prompt  # PROMPT_FILE, read_prompt: also imported from here
from .surgery import model_type, transformer_blocks  # noqa: F401 (fsdp.py imports them from here)


@dataclass
class SoftPromptOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor | None = None


class SoftPromptModel(nn.Module):
    """`base` frozen, `prompt` [P, H] trainable (fp32 whatever the base's dtype).

    The other methods subclass it (p_tuning.py, prefix.py) and keep this interface: forward, generate,
    save_prompt, load_prompt, plus what training asks of every method: `trainable_parameters()` (what AdamW
    steps), `training_state()` / `load_training_state()` (what a checkpoint needs beyond the prompt file to
    resume: nothing here) and `final_prompt()` (what the prompt file holds).
    """

    method = "prompt_tuning"
    """The config's prompt.method this model implements; prompt.json records it for the other methods."""

    def __init__(self, base: nn.Module, prompt: torch.Tensor, keep_dropout: bool = False, base_id: str | None = None):
        super().__init__()
        self.base = base
        self.base_id = base_id or getattr(base.config, "_name_or_path", "")
        """The name the base was asked for (Hub id, folder or builtin:...), recorded in prompt files."""
        self.base.requires_grad_(False)
        self.keep_dropout = keep_dropout
        self.prompt = nn.Parameter(prompt.detach().clone().float())
        self.train(False)

    @property
    def prompt_length(self) -> int:
        return self.prompt.shape[0]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer steps, clips and (under torchrun) averages, in a fixed order."""
        return [self.prompt]

    def training_state(self) -> dict[str, torch.Tensor]:
        """Tensors a checkpoint must hold, beyond the prompt file, to resume exactly (prompt tuning: none)."""
        return {}

    def load_training_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        """Restore what `training_state` returned; `where` names the checkpoint in errors."""
        if tensors:
            names = ", ".join(sorted(tensors))
            raise SoftPromptError(f"{where}: holds encoder weights ({names}), not a prompt_tuning run's")

    def prompt_vectors(self) -> torch.Tensor:
        """The [P, H] vectors put in front of the input (here the trained parameter itself)."""
        return self.prompt

    def final_prompt(self) -> torch.Tensor:
        """What the prompt file holds, detached (here [P, H])."""
        return self.prompt.detach()

    def train(self, mode: bool = True) -> SoftPromptModel:
        # The frozen base keeps dropout off unless asked: dropout noise only slows a 3k-parameter prompt.
        super().train(mode)
        self.base.train(mode and self.keep_dropout)
        return self

    def _inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt: torch.Tensor | None = None):
        """Embeddings with the prompt after any left padding; the grown mask; positions from the mask."""
        embeds = self.base.get_input_embeddings()(input_ids)
        prompt = self.prompt_vectors() if prompt is None else prompt
        embeds, mask = insert_prompt(embeds, attention_mask, prompt.to(embeds.dtype))
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return embeds, mask, position_ids

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_logits: bool = False,
    ) -> SoftPromptOutput:
        embeds, mask, position_ids = self._inputs(input_ids, attention_mask)
        backbone = self.base.base_model
        if return_logits or labels is None or backbone is self.base:
            out = self.base(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False)
            logits = out.logits
            loss = None
            if labels is not None:
                full = F.pad(labels, (self.prompt_length, 0), value=-100)
                loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), full[:, 1:].flatten(), ignore_index=-100)
            return SoftPromptOutput(loss=loss, logits=logits)

        hidden = backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False)[0]
        # Position t predicts token t+1: keep only the positions whose next token is a target,
        # so the [*, vocab] logits are made for ~64 target tokens instead of every position.
        next_labels = F.pad(labels, (self.prompt_length - 1, 0), value=-100)  # [B, P-1+L]: label of token t+1
        keep = next_labels != -100
        head = self.base.get_output_embeddings()
        logits = head(hidden[:, : next_labels.shape[1]][keep])
        loss = F.cross_entropy(logits.float(), next_labels[keep])
        return SoftPromptOutput(loss=loss)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **generation_kwargs: Any) -> torch.Tensor:
        """New tokens only, [B, T]; KV-cached; rows may be left-padded."""
        embeds, mask, _ = self._inputs(input_ids, attention_mask)
        # Hugging Face's generate derives position ids from the mask (cumsum - 1), matching training.
        generation_kwargs.setdefault("pad_token_id", self.base.config.eos_token_id)
        return self.base.generate(inputs_embeds=embeds, attention_mask=mask, **generation_kwargs)

    # --------------------------------------------------------- prompt files

    def save_prompt(self, directory: str | Path, **metadata: Any) -> None:
        """Write prompt.safetensors and prompt.json (base id, sizes, init, and anything passed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"prompt": self.prompt.detach().float().cpu().contiguous()}, str(directory / PROMPT_FILE))
        meta = {
            "base_model": self.base_id,
            "model_type": getattr(self.base.config, "model_type", ""),
            "hidden_size": self.prompt.shape[1],
            "prompt_length": self.prompt.shape[0],
            **metadata,
        }
        (directory / PROMPT_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    def load_prompt(self, directory: str | Path, check_base: bool = True) -> dict[str, Any]:
        """Load a saved prompt into this model; returns its metadata."""
        prompt, meta = read_prompt(directory)
        if meta.get("method") == "prefix_tuning":
            raise SoftPromptError(
                f"{directory}: holds a prefix_tuning prompt (keys and values for every layer), not input vectors; "
                "load it with prompt.method: prefix_tuning"
            )
        hidden = self.prompt.shape[1]
        if prompt.shape[1] != hidden:
            raise SoftPromptError(
                f"{directory}: the prompt has hidden size {prompt.shape[1]} "
                f"(base {meta.get('base_model', '?')}) but this model's is {hidden}"
            )
        if check_base:
            check_trained_base(directory, meta, self.base_id)
        with torch.no_grad():
            self.prompt.data = prompt.to(self.prompt.device, torch.float32)
        return meta


def check_trained_base(directory, meta: dict[str, Any], base_id: str | None) -> None:
    """Refuse a prompt trained on another base than `base_id` (when both are known), naming both."""
    if meta.get("base_model") and base_id and not same_base(meta["base_model"], base_id):
        raise SoftPromptError(
            f"{directory}: the prompt was trained on base model '{meta['base_model']}', not '{base_id}' "
            "(load it onto the model it was trained with)"
        )


def same_base(a: str, b: str) -> bool:
    """Whether two base-model names mean the same model: a PEFT adapter records a built-in by its folder."""
    from .builtin import builtin_name

    return a == b or (builtin_name(a) or a) == (builtin_name(b) or b)


def insert_prompt(embeds: torch.Tensor, mask: torch.Tensor, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Put prompt [P, H] (or one per row, [B, P, H]) into each row of embeds [B, L, H] right after its left padding.

    With no left padding (training batches are right-padded) this is
    torch.cat([prompt, embeds]), exactly PEFT's layout.
    """
    B, L, H = embeds.shape
    P = prompt.shape[-2]
    n_pad = (mask.cumsum(-1) == 0).sum(-1, keepdim=True)  # leading zeros of each row, [B, 1]
    pos = torch.arange(P + L, device=embeds.device).expand(B, -1)
    in_prompt = (pos >= n_pad) & (pos < n_pad + P)
    src = torch.where(pos < n_pad, pos, pos - P).clamp(0, L - 1)  # which token lands at each position
    tokens = embeds.gather(1, src.unsqueeze(-1).expand(-1, -1, H))
    at = (pos - n_pad).clamp(0, P - 1)  # which prompt vector lands at each position
    prompts = prompt[at] if prompt.dim() == 2 else prompt.gather(1, at.unsqueeze(-1).expand(-1, -1, H))
    new_embeds = torch.where(in_prompt.unsqueeze(-1), prompts, tokens)
    new_mask = torch.where(in_prompt, torch.ones_like(pos), mask.gather(1, src).long()).to(mask.dtype)
    return new_embeds, new_mask


# ------------------------------------------------------------------ init


def init_prompt(
    base: nn.Module,
    tokenizer,
    mode: PromptInit | str,
    prompt_length: int,
    init_text: str | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Initial prompt [prompt_length, H] in fp32 (see PromptInit for the modes)."""
    mode = PromptInit(mode)
    table = base.get_input_embeddings().weight.detach()
    generator = torch.Generator().manual_seed(seed)
    if mode is PromptInit.WORDS:
        words = (init_text or "").split()
        if len(words) != prompt_length:
            raise SoftPromptError(
                f"init 'words' needs exactly prompt_length={prompt_length} words, got {len(words)} in {init_text!r}"
            )
        # Each word as it reads mid-sentence (leading space after the first), averaged over its sub-words.
        rows = []
        for i, word in enumerate(words):
            ids = tokenizer((" " if i else "") + word, add_special_tokens=False)["input_ids"]
            rows.append(table[torch.tensor(ids)].float().mean(0))
        return torch.stack(rows)
    if mode is PromptInit.TEXT:
        ids = tokenizer(init_text or "")["input_ids"]
        if not ids:
            raise SoftPromptError("init 'text' needs a non-empty init_text")
        ids = (ids * -(-prompt_length // len(ids)))[:prompt_length]  # repeat, then truncate (as PEFT)
        return table[torch.tensor(ids)].float().clone()
    if mode is PromptInit.VOCAB:
        ids = torch.randint(0, table.shape[0], (prompt_length,), generator=generator)
        return table[ids].float().clone()
    std = table.float().std().item()
    return torch.randn(prompt_length, table.shape[1], generator=generator) * std


def build_model(model_cfg, seed: int = 0) -> tuple[SoftPromptModel, Any]:
    """(SoftPromptModel with an initialised prompt, tokenizer) from a ModelConfig."""
    from .hub import load_base

    base, tokenizer = load_base(model_cfg)
    prompt = init_prompt(base, tokenizer, model_cfg.init, model_cfg.prompt_length, model_cfg.init_text, seed)
    model = SoftPromptModel(base, prompt, keep_dropout=model_cfg.keep_dropout, base_id=model_cfg.name_or_path)
    return model, tokenizer
