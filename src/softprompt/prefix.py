"""Prefix tuning (Li & Liang 2021): trained keys and values in front of every layer's attention.

    model = build_prefix_model(base, tokenizer, cfg.model, cfg.prompt, seed=0)
    out = model(input_ids, attention_mask, labels)     # out.loss: mean target-token cross-entropy
    new = model.generate(input_ids, attention_mask, max_new_tokens=32)
    model.save_prompt("out/prefix")                    # prompt.safetensors: `prefix` [L, 2, kv_heads, P, head_dim]

Shapes: input_ids, attention_mask, labels [B, T]; the prefix [L, 2, h, P, d] (L layers; keys, values; h key/value
heads of width d; D = h*d is the hidden size, or less on a grouped-query model). The base reads the T tokens with
a DynamicCache already holding P positions per layer (prefix[l, 0] as keys, prefix[l, 1] as values, expanded to
the batch), the mask [B, P + T] (P ones, then the given mask) and position ids from that mask, so tokens sit at
positions P.. as in PEFT, and a left-padded row sees exactly what it would see alone (PEFT's do not: their
positions count the pads). The loss applies the LM head only where a label is, as SoftPromptModel's.

Training steps `encoder` (prompt_encoders.PrefixEncoder, PEFT's layout): the flat prefixes [P, L*2*D] themselves,
or Li & Liang's reparameterisation (prompt.prefix_projection: an embedding [P, D] through Linear-Tanh-Linear).
`prefix()` reshapes its output the way PEFT's get_prompt does (view [P, L*2, h, d], layer-major, key before
value). The prompt file holds only that final prefix; training checkpoints also hold the encoder's weights
(trainer_state.safetensors, `trainable.*`) for --resume, as p_tuning.py does.

Init (model.init): words / text / vocab run those tokens through the frozen model and take their keys and
values at every layer (Li & Liang's "real words" init; words: the last sub-token of each word, text: the
tokens repeated or cut to P, vocab: P seeded random tokens); random: PEFT's nn.Embedding init, N(0, 1). With
the projection the trainable inputs start as SoftPromptModel's prompt would (init_prompt; N(0, 1) when D is not
the hidden size) and the MLP as PEFT's (torch's default Linear init).

Only model types whose attention takes a standard per-layer DynamicCache of [B, h, T, d] are accepted
(SUPPORTED); another is refused in one line by `cache_layout`.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from transformers import DynamicCache

from .config import ModelConfig, PromptConfig, PromptInit
from .errors import SoftPromptError
from .model import SoftPromptModel, SoftPromptOutput, check_trained_base, init_prompt
from .prompt_encoders import PrefixEncoder, encoder_state, load_encoder_state
from .prompt_file import PREFIX_KEY, PROMPT_FILE, PROMPT_META, flatten, read_prompt, unflatten
from .surgery import model_type

SUPPORTED = ("gpt2", "llama", "gpt_neox", "mistral", "qwen2")
"""Model types whose cache is one DynamicCache layer per block of keys/values [B, heads, T, head dim] (tested:
gpt2, llama, gpt_neox). Gemma's sliding/hybrid caches, encoder-decoders and latent-attention caches are not."""


def cache_layout(base: nn.Module) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of a supported base; one-line refusal otherwise."""
    kind = model_type(base)
    if kind not in SUPPORTED:
        raise SoftPromptError(
            f"prompt.method prefix_tuning: model type '{kind}' keeps its attention cache in a layout this "
            f"repository does not fill (supported: {', '.join(SUPPORTED)}); use prompt_tuning or p_tuning"
        )
    c = base.config
    heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return c.num_hidden_layers, kv_heads, head_dim


class PrefixModel(SoftPromptModel):
    """`base` frozen; per-layer key/value prefixes [L, 2, h, P, d] from `encoder` (training) or a prompt file."""

    method = "prefix_tuning"

    def __init__(self, base: nn.Module, encoder: PrefixEncoder, keep_dropout: bool = False, base_id: str | None = None):
        layout = cache_layout(base)
        with torch.no_grad():
            first = unflatten(encoder(), layout)
        super().__init__(base, first, keep_dropout=keep_dropout, base_id=base_id)
        self.layout = layout
        self.prompt.requires_grad_(False)  # the last prefix saved or loaded, [L, 2, h, P, d]; `encoder` trains
        self.encoder = encoder.float()
        self.fixed = False
        """True once a prefix file was loaded: the model serves it and the encoder is unused."""
        forward_args = inspect.signature(base.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"  # renamed in transformers 5

    @property
    def prompt_length(self) -> int:
        return self.prompt.shape[3]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def prefix(self) -> torch.Tensor:
        """[L, 2, h, P, d] fp32, with its gradient while training."""
        return self.prompt if self.fixed else unflatten(self.encoder(), self.layout)

    def prompt_vectors(self) -> torch.Tensor:
        raise SoftPromptError("prompt.method prefix_tuning has no input vectors (its prompt is per-layer keys/values)")

    def final_prompt(self) -> torch.Tensor:
        with torch.no_grad():
            return self.prefix().detach().float()

    def training_state(self) -> dict[str, torch.Tensor]:
        return encoder_state(self.encoder)

    def load_training_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        load_encoder_state(
            self.encoder,
            tensors,
            f"{where}: its prefix encoder weights do not fit this run's (prompt.prefix_projection, "
            "prompt.encoder_hidden_size, model.prompt_length); resume with the config it was trained with",
        )
        self.fixed = False

    def cache(self, batch: int, dtype: torch.dtype, prefix: torch.Tensor | None = None) -> DynamicCache:
        """A DynamicCache holding the prefix at every layer, for `batch` rows, in the base's dtype."""
        prefix = self.prefix() if prefix is None else prefix
        cache = DynamicCache(config=self.base.config)
        for layer, (keys, values) in enumerate(prefix.to(dtype)):
            shape = (batch, *keys.shape)
            cache.update(keys.unsqueeze(0).expand(shape), values.unsqueeze(0).expand(shape), layer)
        return cache

    def _inputs_with_cache(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: int | None = None):
        """(mask [B, P+T], position ids [B, T], cache of `rows` rows (default B)); positions from the mask."""
        B, P = input_ids.shape[0], self.prompt_length
        mask = torch.cat([attention_mask.new_ones(B, P), attention_mask], dim=1)
        position_ids = (mask.long().cumsum(-1) - 1)[:, P:].clamp(min=0)
        dtype = self.base.get_input_embeddings().weight.dtype
        return mask, position_ids, self.cache(rows or B, dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_logits: bool = False,
    ) -> SoftPromptOutput:
        mask, position_ids, cache = self._inputs_with_cache(input_ids, attention_mask)
        kwargs = dict(attention_mask=mask, position_ids=position_ids, use_cache=False, **{self._cache_arg: cache})
        backbone = self.base.base_model
        if return_logits or labels is None or backbone is self.base:
            logits = self.base(input_ids=input_ids, **kwargs).logits
            loss = None
            if labels is not None:
                loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
            return SoftPromptOutput(loss=loss, logits=logits)
        hidden = backbone(input_ids=input_ids, **kwargs)[0]
        next_labels = labels[:, 1:]  # position t predicts token t+1; the LM head runs only where a label is
        keep = next_labels != -100
        logits = self.base.get_output_embeddings()(hidden[:, :-1][keep])
        return SoftPromptOutput(loss=F.cross_entropy(logits.float(), next_labels[keep]))

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **generation_kwargs: Any) -> torch.Tensor:
        """New tokens only, [B, T]; KV-cached from the prefix; rows may be left-padded."""
        generation_kwargs.setdefault("pad_token_id", self.base.config.eos_token_id)
        # generate repeats tensors for beam search but not a cache, so the cache is built with every beam's row.
        rows = input_ids.shape[0] * generation_kwargs.get("num_beams", 1)
        mask, _, cache = self._inputs_with_cache(input_ids, attention_mask, rows)
        kwargs = {self._cache_arg: cache, **generation_kwargs}
        out = self.base.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        return out[:, input_ids.shape[1] :]

    def save_prompt(self, directory: str | Path, **metadata: Any) -> None:
        """prompt.safetensors (`prefix` [L, 2, h, P, d] fp32) and prompt.json (method, sizes, and anything passed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            self.prompt.data = self.final_prompt().to(self.prompt.device)
        save_file({PREFIX_KEY: self.prompt.detach().float().cpu().contiguous()}, str(directory / PROMPT_FILE))
        layers, kv_heads, head_dim = self.layout
        meta = {
            "base_model": self.base_id,
            "model_type": model_type(self.base),
            "method": self.method,
            "prefix_projection": self.encoder.projection,
            "layers": layers,
            "kv_heads": kv_heads,
            "head_dim": head_dim,
            "prompt_length": self.prompt_length,
            **metadata,
        }
        (directory / PROMPT_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    def load_prompt(self, directory: str | Path, check_base: bool = True) -> dict[str, Any]:
        """Load a saved prefix (any prefix length) into this model, which then serves it; returns its metadata."""
        prefix, meta = read_prompt(directory)
        if meta.get("method") != self.method:
            raise SoftPromptError(
                f"{directory}: holds a {meta.get('method', 'prompt_tuning')} prompt (input vectors), not a "
                f"prefix_tuning one; load it with prompt.method: {meta.get('method', 'prompt_tuning')}"
            )
        if prefix.shape[:3] != self.prompt.shape[:3] or prefix.shape[4] != self.prompt.shape[4]:
            raise SoftPromptError(
                f"{directory}: the prefix has shape {list(prefix.shape)} (base {meta.get('base_model', '?')}) but "
                f"this model takes [{', '.join(map(str, self.prompt.shape[:3]))}, P, {self.prompt.shape[4]}]"
            )
        if check_base:
            check_trained_base(directory, meta, self.base_id)
        with torch.no_grad():
            self.prompt.data = prefix.to(self.prompt.device, torch.float32)
        self.fixed = True
        return meta


# ------------------------------------------------------------------ init


@torch.no_grad()
def token_prefix(base: nn.Module, ids: list[int], pick: list[int]) -> torch.Tensor:
    """Keys and values the frozen base makes for `ids` (one sequence), at positions `pick`: [L, 2, h, len(pick), d]."""
    out = base(input_ids=torch.tensor([ids], device=base.device), use_cache=True)
    layers = out.cache.layers if hasattr(out, "cache") else out.past_key_values.layers
    return torch.stack([torch.stack([lay.keys[0][:, pick], lay.values[0][:, pick]]) for lay in layers]).float().cpu()


def init_prefix(base: nn.Module, tokenizer, model_cfg: ModelConfig, seed: int) -> torch.Tensor:
    """The initial prefix [L, 2, h, P, d] fp32 for model.init (see the module docstring)."""
    layout, P = cache_layout(base), model_cfg.prompt_length
    mode, text = PromptInit(model_cfg.init), model_cfg.init_text or ""
    generator = torch.Generator().manual_seed(seed)
    if mode is PromptInit.RANDOM:
        return unflatten(torch.randn(P, layout[0] * 2 * layout[1] * layout[2], generator=generator), layout)
    if mode is PromptInit.VOCAB:
        ids = torch.randint(0, base.get_input_embeddings().weight.shape[0], (P,), generator=generator).tolist()
        return token_prefix(base, ids, list(range(P)))
    if mode is PromptInit.TEXT:
        ids = tokenizer(text)["input_ids"]
        if not ids:
            raise SoftPromptError("init 'text' needs a non-empty init_text")
        ids = (ids * -(-P // len(ids)))[:P]  # repeat, then truncate (as PEFT's TEXT init)
        return token_prefix(base, ids, list(range(P)))
    words = text.split()
    if len(words) != P:
        raise SoftPromptError(f"init 'words' needs exactly prompt_length={P} words, got {len(words)} in {text!r}")
    ids, last = [], []
    for i, word in enumerate(words):  # each word as it reads mid-sentence; its last sub-token has seen all of it
        ids += tokenizer((" " if i else "") + word, add_special_tokens=False)["input_ids"]
        last.append(len(ids) - 1)
    return token_prefix(base, ids, last)


def build_prefix_model(
    base: nn.Module, tokenizer, model_cfg: ModelConfig, prompt_cfg: PromptConfig, seed: int
) -> PrefixModel:
    """A PrefixModel with its encoder initialised (torch's RNG seeded by the caller for the projection MLP)."""
    layers, kv_heads, head_dim = cache_layout(base)
    width = kv_heads * head_dim
    if prompt_cfg.prefix_projection:
        hidden = base.get_input_embeddings().weight.shape[1]
        if width == hidden:
            inputs = init_prompt(base, tokenizer, model_cfg.init, model_cfg.prompt_length, model_cfg.init_text, seed)
        else:  # grouped-query: the inputs are D wide, not embeddings
            inputs = torch.randn(model_cfg.prompt_length, width, generator=torch.Generator().manual_seed(seed))
        encoder = PrefixEncoder(layers, width, init_inputs=inputs, hidden=prompt_cfg.encoder_hidden_size or width)
    else:
        encoder = PrefixEncoder(layers, width, init_kv=flatten(init_prefix(base, tokenizer, model_cfg, seed)))
    return PrefixModel(base, encoder, keep_dropout=model_cfg.keep_dropout, base_id=model_cfg.name_or_path)
