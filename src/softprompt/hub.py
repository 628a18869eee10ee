"""Loading the base model and tokenizer from the Hub, a local folder or a built-in.

Everything goes through `AutoModelForCausalLM.from_pretrained`; a built-in
model is first saved to a local folder. A Hub id that cannot be fetched ends
in one paragraph naming the id and the offline options, not a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from .builtin import BUILTIN_PREFIX, builtin_path
from .config import ModelConfig
from .errors import SoftPromptError


def resolve_model_path(name_or_path: str) -> str:
    if name_or_path.startswith(BUILTIN_PREFIX):
        return str(builtin_path(name_or_path))
    return name_or_path


def offline_message(what: str, ident: str, err: Exception) -> str:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"could not load {what} '{ident}' ({reason}). The Hugging Face Hub could not be reached or has no such id. "
        "To work offline: point to a local directory saved with save_pretrained; or set HF_HUB_OFFLINE=1 "
        "with a cache already holding it; or try the pipeline on the built-in model with "
        "configs/smoke/*.yaml (model.name_or_path: builtin:tiny-gpt2)."
    )


def load_base(cfg: ModelConfig):
    """(frozen base model in eval mode, tokenizer) for a model config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(cfg.name_or_path)
    local = Path(path).is_dir()
    if not local and (path.startswith((".", "/", "~")) or os.sep in path and Path(path).parent.is_dir()):
        raise SoftPromptError(f"model.name_or_path '{cfg.name_or_path}': no such local directory")
    kwargs = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        base = AutoModelForCausalLM.from_pretrained(path, dtype="float32", **kwargs)
    except (OSError, ValueError) as err:
        if local:
            raise SoftPromptError(f"model.name_or_path '{cfg.name_or_path}': cannot load the model there ({err})") from err
        raise SoftPromptError(offline_message("model", cfg.name_or_path, err)) from err
    if tokenizer.eos_token_id is None:
        raise SoftPromptError(f"model.name_or_path '{cfg.name_or_path}': the tokenizer has no EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has no pad token; labels never rely on it
    base.eval()
    base.requires_grad_(False)
    return base, tokenizer


def context_window(base) -> int:
    """Positions the model can attend over (1024 for GPT-2)."""
    cfg = base.config
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise SoftPromptError(f"cannot tell the context window of model type '{cfg.model_type}'")
