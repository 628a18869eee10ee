"""Reading a saved prompt: our prompt folder, or a PEFT prompt-tuning adapter folder.

    prompt, meta = read_prompt("checkpoints/smoke-sum/epoch_003")   # prompt [P, H] fp32, metadata dict

Our folder:   prompt.safetensors (one tensor `prompt` [P, H]) + prompt.json (base model, sizes, the run's details);
              a prefix_tuning prompt holds `prefix` [layers, 2, kv_heads, P, head_dim] instead, and its
              prompt.json says `"method": "prefix_tuning"` (docs/methods.md)
PEFT's:       adapter_config.json + adapter_model.safetensors (`prompt_embeddings`: [P, H] for PROMPT_TUNING
              and P_TUNING, the flat prefixes [P, L*2*D] for PREFIX_TUNING); see peft_compat.py, which writes
              one from ours.

Writing our format is `SoftPromptModel.save_prompt` (model.py); this module only reads, so both model.py and
peft_compat.py can import it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .errors import SoftPromptError

PROMPT_FILE = "prompt.safetensors"
PROMPT_META = "prompt.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX_KEY = "prefix"
"""The tensor a prefix_tuning prompt file holds: [layers, 2 (key, value), kv_heads, P, head_dim]."""
PEFT_KEY = "prompt_embeddings"
"""The tensor name PEFT's get_peft_model_state_dict gives a prompt-tuning adapter."""


def read_prompt(directory: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """(prompt [P, H] fp32, metadata) from a prompt folder, with clear errors for bad files.

    A folder without prompt.safetensors may hold a PEFT prompt-tuning adapter
    instead (adapter_config.json + adapter_model.safetensors), as PEFT saves it.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SoftPromptError(f"{directory}: prompt/checkpoint directory not found")
    tensor_path = directory / PROMPT_FILE
    if not tensor_path.is_file():
        if (directory / ADAPTER_CONFIG).is_file():
            return read_peft_adapter(directory)
        raise SoftPromptError(f"{directory}: no {PROMPT_FILE} in this directory (nor a PEFT adapter)")
    try:
        tensors = load_file(str(tensor_path))
    except Exception as err:  # safetensors raises its own error types for truncated/corrupt files
        raise SoftPromptError(f"{tensor_path}: not a readable safetensors file ({err})") from err
    meta = read_prompt_meta(directory)
    if isinstance(meta, dict) and meta.get("method") == "prefix_tuning":
        prefix = tensors.get(PREFIX_KEY)
        if prefix is None or prefix.dim() != 5 or prefix.shape[1] != 2:
            shape = "[layers, 2, heads, P, d]"
            raise SoftPromptError(f"{tensor_path}: expected one 5-D tensor named '{PREFIX_KEY}' {shape}")
        return prefix.float(), meta
    prompt = tensors.get("prompt")
    if prompt is None or prompt.dim() != 2:
        raise SoftPromptError(f"{tensor_path}: expected one 2-D tensor named 'prompt'")
    return prompt.float(), meta


PEFT_TYPES = {"PROMPT_TUNING": "prompt_tuning", "P_TUNING": "p_tuning", "PREFIX_TUNING": "prefix_tuning"}
"""PEFT's adapter types that read as our prompts, and our method for each."""


def read_prompt_meta(directory: str | Path) -> dict[str, Any]:
    """prompt.json of a prompt folder ({} when it has none), without reading the tensor: what a caller checks
    (the method, the task) before it loads anything."""
    meta_path = Path(directory) / PROMPT_META
    if not meta_path.is_file():
        return {}
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SoftPromptError(f"{meta_path}: not valid JSON ({err})") from err


def unflatten(flat: torch.Tensor, layout: tuple[int, int, int]) -> torch.Tensor:
    """PEFT's flat prefixes [P, L*2*h*d] -> [L, 2, h, P, d], for layout (L, h, d): its get_prompt's view
    [P, L*2, h, d] then permute [2, 0, 3, 1, 4] (layer-major, key before value)."""
    layers, kv_heads, head_dim = layout
    return flat.view(flat.shape[0], layers, 2, kv_heads, head_dim).permute(1, 2, 3, 0, 4)


def flatten(prefix: torch.Tensor) -> torch.Tensor:
    """[L, 2, h, P, d] -> PEFT's flat [P, L*2*h*d] (what its adapter file holds as prompt_embeddings)."""
    return prefix.permute(3, 0, 1, 2, 4).reshape(prefix.shape[3], -1)


def read_peft_adapter(directory: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """(prompt [P, H] fp32, or a prefix [L, 2, h, P, d], metadata) from a PEFT prompt-tuning, P-tuning or
    prefix-tuning adapter folder (see read_prompt).

    The metadata is what adapter_config.json says (base model, sizes, `method`),
    updated by a prompt.json beside it when there is one.
    """
    directory = Path(directory)
    config = _read_json(directory / ADAPTER_CONFIG)
    peft_type = config.get("peft_type")
    if peft_type not in PEFT_TYPES:
        raise SoftPromptError(
            f"{directory / ADAPTER_CONFIG}: a PEFT {peft_type} adapter, not a prompt-tuning one "
            f"({', '.join(PEFT_TYPES)})"
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
        "method": PEFT_TYPES[peft_type],
    }
    if (directory / PROMPT_META).is_file():
        meta.update(_read_json(directory / PROMPT_META))
    if peft_type == "PREFIX_TUNING":  # PEFT saves the final flat prefixes, whether trained with a projection or not
        layout = [config.get(k) for k in ("num_layers", "num_attention_heads", "token_dim")]
        if not all(isinstance(v, int) and v > 0 for v in layout) or prompt.shape[1] != 2 * layout[0] * layout[2]:
            raise SoftPromptError(
                f"{directory / ADAPTER_CONFIG}: num_layers, num_attention_heads and token_dim do not describe "
                f"{PEFT_KEY} {list(prompt.shape)} (num_virtual_tokens x num_layers*2*token_dim)"
            )
        layers, heads, width = layout
        meta.pop("hidden_size")
        meta |= {"method": "prefix_tuning", "layers": layers, "kv_heads": heads, "head_dim": width // heads}
        return unflatten(prompt.float(), (layers, heads, width // heads)), meta
    return prompt.float(), meta


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SoftPromptError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise SoftPromptError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value
