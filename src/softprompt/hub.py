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
from .devices import DTYPES
from .errors import SoftPromptError, first_line, offline_message
from .surgery import fuse_gelu


def resolve_model_path(name_or_path: str) -> str:
    if name_or_path.startswith(BUILTIN_PREFIX):
        return str(builtin_path(name_or_path))
    return name_or_path


def load_base(cfg: ModelConfig):
    """(frozen base model in eval mode, tokenizer) for a model config."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(cfg.name_or_path)
    local = Path(path).is_dir()
    if not local and (path.startswith((".", "/", "~")) or os.sep in path and Path(path).parent.is_dir()):
        raise SoftPromptError(f"model.name_or_path '{cfg.name_or_path}': no such local directory")
    if local and not (Path(path) / "config.json").is_file():
        raise SoftPromptError(
            f"model.name_or_path '{cfg.name_or_path}': the directory has no config.json; "
            "it must hold a model saved with save_pretrained"
        )
    # trust_remote_code comes from the config alone (default False): it runs Python shipped with the model.
    kwargs = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        # Stored in model.dtype (fp32 unless asked); the prompt stays fp32 whatever this is (SoftPromptModel).
        base = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[cfg.dtype], **kwargs)
    except (OSError, ValueError) as err:
        if local:
            raise SoftPromptError(
                f"model.name_or_path '{cfg.name_or_path}': cannot load a model from this directory ({first_line(err)})"
            ) from err
        raise SoftPromptError(offline_message("model", cfg.name_or_path, err)) from err
    if tokenizer.eos_token_id is None:
        raise SoftPromptError(f"model.name_or_path '{cfg.name_or_path}': the tokenizer has no EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has no pad token; labels never rely on it
    if cfg.fused_gelu:
        fuse_gelu(base)
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
