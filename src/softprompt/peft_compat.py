"""Our prompt files as PEFT prompt-tuning adapters, and PEFT adapters as our prompts.

    export_peft("checkpoints/sum/epoch_009", "out/sum-peft")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("gpt2"), "out/sum-peft")
    prompt, meta = read_prompt("out/sum-peft")      # any PEFT prompt-tuning adapter folder

An adapter folder, as PEFT's `save_pretrained` writes it for prompt tuning:

    adapter_config.json        peft_type PROMPT_TUNING, task_type CAUSAL_LM, num_virtual_tokens P,
                               token_dim H, base_model_name_or_path
    adapter_model.safetensors  one tensor, `prompt_embeddings` [P, H]
    prompt.json                (ours, beside them) the checkpoint's metadata

The two formats hold the same [P, H] matrix and put it in the same place (in
front of the token embeddings, the mask grown by P ones), so on right-padded
batches PEFT's logits equal ours. They differ only with left padding, where
PEFT puts the prompt before the pads (see model.py).

`base_model_name_or_path` must be something `from_pretrained` can load, so a
prompt trained on `builtin:tiny-gpt2` is exported with that model's local
cache folder (valid on this machine only); prompt.json keeps the name it was
trained under, so `load_prompt` still checks the base against it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import SoftPromptError
from .hub import resolve_model_path
from .model import PROMPT_FILE, PROMPT_META, read_prompt

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_KEY = "prompt_embeddings"
"""The tensor name PEFT's get_peft_model_state_dict gives a prompt-tuning adapter."""


def export_peft(checkpoint_dir: str | Path, out_dir: str | Path, base_model: str | None = None) -> Path:
    """Write the prompt of `checkpoint_dir` as a PEFT prompt-tuning adapter in `out_dir`; returns out_dir.

    `base_model` overrides the base named in the checkpoint's prompt.json.
    """
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    prompt, meta = read_prompt(checkpoint_dir)
    name = base_model or meta.get("base_model")
    if not name:
        raise SoftPromptError(
            f"{checkpoint_dir}: the prompt's metadata names no base model; pass it (--base-model gpt2)"
        )
    if out_dir.exists() and out_dir.resolve() == checkpoint_dir.resolve():
        raise SoftPromptError(f"{out_dir}: write the adapter to another folder than the checkpoint")
    if (out_dir / PROMPT_FILE).exists():
        raise SoftPromptError(f"{out_dir}: holds a softprompt checkpoint ({PROMPT_FILE}); choose another folder")
    config = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": resolve_model_path(name),
        "revision": None,
        "num_virtual_tokens": prompt.shape[0],
        "token_dim": prompt.shape[1],
        "num_transformer_submodules": 1,
        "num_attention_heads": None,  # PEFT fills these from the base model's config; prompt tuning never uses them
        "num_layers": None,
        "prompt_tuning_init": "RANDOM",  # how PEFT would initialise it; loading overwrites it with our tensor
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "inference_mode": True,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{ADAPTER_WEIGHTS}.tmp"
    save_file({PEFT_KEY: prompt.contiguous()}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out_dir / ADAPTER_WEIGHTS)
    _write_json(out_dir / ADAPTER_CONFIG, config)
    _write_json(out_dir / PROMPT_META, {**meta, "base_model": name})
    return out_dir


def read_peft_adapter(directory: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """(prompt [P, H] fp32, metadata) from a PEFT prompt-tuning adapter folder (see read_prompt).

    The metadata is what adapter_config.json says (base model, sizes),
    updated by a prompt.json beside it when there is one.
    """
    directory = Path(directory)
    config = _read_json(directory / ADAPTER_CONFIG)
    peft_type = config.get("peft_type")
    if peft_type != "PROMPT_TUNING":
        raise SoftPromptError(
            f"{directory / ADAPTER_CONFIG}: a PEFT {peft_type} adapter, not a prompt-tuning one (PROMPT_TUNING)"
        )
    if (config.get("num_transformer_submodules") or 1) != 1:
        raise SoftPromptError(
            f"{directory / ADAPTER_CONFIG}: an encoder-decoder adapter (one prompt per submodule); "
            "only causal-LM prompts load here"
        )
    weights = directory / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise SoftPromptError(f"{directory}: no {ADAPTER_WEIGHTS} (adapters saved as pickled .bin files are not read)")
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error types for truncated/corrupt files
        raise SoftPromptError(f"{weights}: not a readable safetensors file ({err})") from err
    prompt = tensors.get(PEFT_KEY)
    if prompt is None or prompt.dim() != 2:
        raise SoftPromptError(f"{weights}: expected one 2-D tensor named '{PEFT_KEY}'")
    virtual = config.get("num_virtual_tokens")
    if virtual is not None and virtual != prompt.shape[0]:
        raise SoftPromptError(
            f"{directory}: {ADAPTER_CONFIG} says num_virtual_tokens={virtual} but {PEFT_KEY} has {prompt.shape[0]} rows"
        )
    meta: dict[str, Any] = {
        "base_model": config.get("base_model_name_or_path") or "",
        "hidden_size": prompt.shape[1],
        "prompt_length": prompt.shape[0],
        "format": "peft",
    }
    if (directory / PROMPT_META).is_file():
        meta.update(_read_json(directory / PROMPT_META))
    return prompt.float(), meta


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SoftPromptError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise SoftPromptError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
