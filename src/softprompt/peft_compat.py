"""Our prompt files as PEFT adapters (prompt tuning, P-tuning, prefix tuning), and PEFT adapters as our prompts.

    export_peft("checkpoints/sum/epoch_009", "out/sum-peft")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("gpt2"), "out/sum-peft")
    prompt, meta = read_prompt("out/sum-peft")      # any PEFT prompt-tuning adapter folder (prompt_file.py)

An adapter folder, as PEFT's `save_pretrained` writes it for prompt tuning:

    adapter_config.json        peft_type PROMPT_TUNING, task_type CAUSAL_LM, num_virtual_tokens P,
                               token_dim H, base_model_name_or_path
    adapter_model.safetensors  one tensor, `prompt_embeddings` [P, H]
    prompt.json                (ours, beside them) the checkpoint's metadata

A p_tuning prompt becomes a P_TUNING adapter in inference mode (`prompt_embeddings` [P, H]: the encoder's
output, which is what PEFT itself saves and serves in inference mode), a prefix_tuning prompt a
PREFIX_TUNING adapter (`prompt_embeddings` [P, L*2*D], the flat final prefixes; prefix_projection false,
since the projection is spent), both loading in PEFT with our logits (tests/unit/test_methods_peft_files.py).

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

from safetensors.torch import save_file

from .errors import SoftPromptError
from .hub import resolve_model_path
from .prompt_file import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_KEY, PROMPT_FILE, PROMPT_META, flatten, read_prompt


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
    config, prompt = _adapter_config(prompt, meta, resolve_model_path(name))
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{ADAPTER_WEIGHTS}.tmp"
    save_file({PEFT_KEY: prompt.contiguous()}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, out_dir / ADAPTER_WEIGHTS)
    _write_json(out_dir / ADAPTER_CONFIG, config)
    _write_json(out_dir / PROMPT_META, {**meta, "base_model": name})
    return out_dir


def _adapter_config(prompt, meta: dict[str, Any], base_path: str):
    """(adapter_config.json's content, the tensor to save as prompt_embeddings) for our prompt of any method."""
    method = meta.get("method", "prompt_tuning")
    config = {
        "peft_type": "PROMPT_TUNING",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_path,
        "revision": None,
        "num_virtual_tokens": prompt.shape[-2] if method == "prefix_tuning" else prompt.shape[0],
        "token_dim": prompt.shape[1],
        "num_transformer_submodules": 1,
        "num_attention_heads": None,  # PEFT fills these from the base model's config; prompt tuning never uses them
        "num_layers": None,
    }
    done = {"inference_mode": True}  # last, as before the other methods (a prompt-tuning export is byte-identical)
    if method == "prefix_tuning":
        layers, _, kv_heads, _, head_dim = prompt.shape
        config |= {"peft_type": "PREFIX_TUNING", "token_dim": kv_heads * head_dim, "num_attention_heads": kv_heads}
        config |= {"num_layers": layers, "prefix_projection": False, "encoder_hidden_size": kv_heads * head_dim}
        return config | done, flatten(prompt)
    if method == "p_tuning":  # inference mode: PEFT serves prompt_embeddings as they are, no encoder
        encoder = meta.get("encoder", "mlp").upper()
        config |= {"peft_type": "P_TUNING", "encoder_reparameterization_type": encoder}
        config |= {"encoder_hidden_size": prompt.shape[1], "encoder_num_layers": 2, "encoder_dropout": 0.0}
        return config | done, prompt
    config |= {"prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None, "tokenizer_name_or_path": None}
    return config | done, prompt  # RANDOM: how PEFT would initialise it; loading overwrites it with our tensor


def _write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
