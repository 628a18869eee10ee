"""Building the model for a prompting method: prompt_tuning, p_tuning or prefix_tuning (config.Method).

    model, tokenizer = build_for_training(cfg.model, cfg.prompt, seed=cfg.train.seed)   # train.py
    model, tokenizer = build_for_prompt(cfg.model, meta, seed=cfg.train.seed)           # evaluate.py: by the file

Every model is a SoftPromptModel (forward, generate, save_prompt, load_prompt), so the loop, checkpoints and
evaluation do not ask which method it is. What a prompt file holds decides how it is served: a prompt_tuning
or p_tuning file holds input vectors [P, H] (a plain SoftPromptModel serves both), a prefix_tuning file
per-layer keys and values (a PrefixModel). docs/methods.md describes the methods.
"""

from __future__ import annotations

from typing import Any

import torch

from .config import Encoder, Method, ModelConfig, PromptConfig
from .hub import load_base
from .model import SoftPromptModel, init_prompt
from .p_tuning import PTuningModel
from .prefix import PrefixEncoder, PrefixModel, build_prefix_model, cache_layout
from .prompt_encoders import PromptEncoder


def build_for_training(model_cfg: ModelConfig, prompt_cfg: PromptConfig, seed: int = 0) -> tuple[SoftPromptModel, Any]:
    """(model of prompt_cfg.method with its trainable part initialised, tokenizer).

    prompt_tuning: exactly model.build_model's. The encoders' Linear/LSTM weights come from torch's RNG,
    which the caller seeds (train.py seeds it with train.seed first).
    """
    base, tokenizer = load_base(model_cfg)
    m = model_cfg
    if prompt_cfg.method is Method.PREFIX_TUNING:
        return build_prefix_model(base, tokenizer, m, prompt_cfg, seed), tokenizer
    prompt = init_prompt(base, tokenizer, m.init, m.prompt_length, m.init_text, seed)
    if prompt_cfg.method is Method.P_TUNING:
        hidden = prompt_cfg.encoder_hidden_size or prompt.shape[1]
        encoder = PromptEncoder(prompt, prompt_cfg.encoder or Encoder.MLP, hidden)
        return PTuningModel(base, encoder, keep_dropout=m.keep_dropout, base_id=m.name_or_path), tokenizer
    return SoftPromptModel(base, prompt, keep_dropout=m.keep_dropout, base_id=m.name_or_path), tokenizer


def build_for_prompt(model_cfg: ModelConfig, meta: dict[str, Any], seed: int = 0) -> tuple[SoftPromptModel, Any]:
    """(model that can serve a prompt file whose prompt.json is `meta`, tokenizer); load_prompt fills it.

    An empty `meta` (a baseline, no file) gives a plain SoftPromptModel.
    """
    if meta.get("method") != Method.PREFIX_TUNING.value:
        return build_for_training(model_cfg, PromptConfig(), seed)
    base, tokenizer = load_base(model_cfg)
    layers, kv_heads, head_dim = cache_layout(base)
    placeholder = torch.zeros(1, layers * 2 * kv_heads * head_dim)  # load_prompt replaces it
    encoder = PrefixEncoder(layers, kv_heads * head_dim, init_kv=placeholder)
    model = PrefixModel(base, encoder, base_id=model_cfg.name_or_path)
    return model, tokenizer
