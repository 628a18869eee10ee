"""The prompts a server loads: named training checkpoints, checked at start against each other and the base.

    served, multi, tokenizer = load_served({"qna": "checkpoints/smoke-qna", "sum": "checkpoints/smoke-sum/epoch_003"})

A name maps to a run folder (its latest good checkpoint) or a checkpoint folder. Each checkpoint must pass its
SHA-256 check (trainer_state.json records its files' digests), and its recorded config gives the task, the base
and the limits (source budget, token limit) exactly as training and evaluation used them. All prompts must share
one frozen base; each prompt is checked against it (shape [prompt_length, hidden size], base model id, model
type). Any problem stops the start with one sentence naming the prompt and its folder.

Methods: prompt_tuning (and p_tuning, whose files hold the final vectors) are served; a prompt file of another
method (prefix_tuning's per-layer key/value prefixes) is refused at start: it cannot join a mixed batch yet.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import STATE_META, resolve_prompt_dir, verify
from ..config import Config, config_from_dict
from ..data import source_budget
from ..errors import SoftPromptError
from ..evaluate import token_limits
from ..files import sha256
from ..generate import source_fields
from ..hub import context_window, load_base
from ..model import PROMPT_FILE, read_prompt, same_base
from ..multi import MultiPromptModel
from ..prompt_file import read_prompt_meta

SERVED_METHODS = ("prompt_tuning", "p_tuning")
"""Methods whose prompt file is one [P, H] tensor put before the input embeddings: they share mixed batches."""
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A prompt's name (the request's `model`): never a path."""


@dataclasses.dataclass(frozen=True)
class ServedPrompt:
    """One named prompt as the server uses it."""

    name: str
    cfg: Config
    checkpoint: Path
    sha256: str
    prompt: torch.Tensor
    budget: int = 0
    """Source tokens an input may have (the context window less the prompt and max_tokens, as in training)."""
    max_tokens: int = 0
    """The most new tokens a request may ask for: the task's evaluation limit."""
    window: int = 0
    """The base's context window."""

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f.removesuffix("[]") for f in source_fields(self.cfg.task)[0])

    def card(self) -> dict[str, Any]:
        """What GET /v1/models says of it."""
        return {
            "id": self.name,
            "object": "model",
            "created": 0,
            "owned_by": "softprompt",
            "task": self.cfg.task.name,
            "input_fields": list(self.fields),
            "text_field": source_fields(self.cfg.task)[1],
            "max_tokens": self.max_tokens,
            "max_input_tokens": self.budget,
            "checkpoint": self.checkpoint.name,
            "sha256": self.sha256,
        }


def _read_checkpoint(name: str, path: str | Path) -> ServedPrompt:
    """A named checkpoint, checked on its own (name, SHA-256, config, shape, method) before the base loads."""
    if not NAME.fullmatch(name):
        raise SoftPromptError(f"prompt name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    ckpt = resolve_prompt_dir(path)
    where = f"prompt '{name}' ({ckpt})"
    if not (ckpt / PROMPT_FILE).is_file() or not (ckpt / STATE_META).is_file():
        raise SoftPromptError(f"{where}: not a training checkpoint (needs {PROMPT_FILE} and {STATE_META})")
    problem = verify(ckpt)
    if problem:
        raise SoftPromptError(f"{where}: {problem}")
    try:
        recorded = dict(json.loads((ckpt / STATE_META).read_text(encoding="utf-8"))["config"])
        recorded.pop("source", None)  # where the run's config file was; the copy here is what counts
        cfg = config_from_dict(recorded, source=ckpt / STATE_META)
    except (KeyError, TypeError) as err:
        raise SoftPromptError(f"{where}: {STATE_META} records no config") from err
    method = str(read_prompt_meta(ckpt).get("method", "prompt_tuning"))  # before the tensor: its shape is the method's
    if method not in SERVED_METHODS:
        raise SoftPromptError(
            f"{where}: method {method} is not served (only {', '.join(SERVED_METHODS)}: their prompts share a "
            "mixed batch); evaluate it with scripts/evaluate.py"
        )
    prompt, meta = read_prompt(ckpt)
    if meta.get("task", cfg.task.name) != cfg.task.name:
        raise SoftPromptError(f"{where}: prompt.json says task '{meta['task']}', its config '{cfg.task.name}'")
    if prompt.shape[0] != cfg.model.prompt_length:
        raise SoftPromptError(
            f"{where}: the prompt has {prompt.shape[0]} vectors, its config model.prompt_length "
            f"{cfg.model.prompt_length}"
        )
    return ServedPrompt(name, cfg, ckpt, sha256(ckpt / PROMPT_FILE), prompt)


def _check_one_base(served: list[ServedPrompt]) -> None:
    keys = ("name_or_path", "revision", "dtype", "fused_gelu")
    first = served[0]
    for p in served[1:]:
        for key in keys:
            if getattr(p.cfg.model, key) != getattr(first.cfg.model, key):
                raise SoftPromptError(
                    f"prompt '{p.name}' ({p.checkpoint}) was trained with model.{key} "
                    f"{getattr(p.cfg.model, key)!r}, prompt '{first.name}' with {getattr(first.cfg.model, key)!r}: "
                    "one server holds one frozen base"
                )


def _check_against_base(p: ServedPrompt, base) -> ServedPrompt:
    """The prompt fits the loaded base (hidden size, base id, model type); with its budget and token limit."""
    where = f"prompt '{p.name}' ({p.checkpoint})"
    hidden = base.get_input_embeddings().weight.shape[1]
    if p.prompt.shape[1] != hidden:
        raise SoftPromptError(f"{where}: hidden size {p.prompt.shape[1]}, the base's is {hidden}")
    _, meta = read_prompt(p.checkpoint)
    if meta.get("base_model") and not same_base(meta["base_model"], p.cfg.model.name_or_path):
        raise SoftPromptError(f"{where}: trained on base '{meta['base_model']}', not '{p.cfg.model.name_or_path}'")
    if meta.get("model_type") and meta["model_type"] != base.config.model_type:
        raise SoftPromptError(f"{where}: a prompt for model type {meta['model_type']}, the base is a "
                              f"{base.config.model_type}")  # fmt: skip
    budget = source_budget(p.cfg, context_window(base))  # data.source_budget, as training and evaluation
    limit = token_limits(p.cfg, [[]], None)[0]
    return dataclasses.replace(p, budget=budget, max_tokens=limit, window=context_window(base))


def load_served(specs: dict[str, str | Path], device: torch.device | str | None = None):
    """({name: ServedPrompt}, MultiPromptModel holding them all, tokenizer); see the module docstring."""
    if not specs:
        raise SoftPromptError("no prompts to serve: give --prompt NAME=CHECKPOINT (repeatable) or --prompts-dir")
    served = [_read_checkpoint(name, path) for name, path in specs.items()]
    _check_one_base(served)
    base, tokenizer = load_base(served[0].cfg.model)
    if device is not None:
        base.to(device)
    served = [_check_against_base(p, base) for p in served]
    multi = MultiPromptModel(base, {p.name: p.prompt for p in served}, base_id=served[0].cfg.model.name_or_path)
    return {p.name: p for p in served}, multi, tokenizer


def prompts_in(folder: str | Path) -> dict[str, Path]:
    """{run name: run folder} of every run folder in `folder` that holds a checkpoint (serve.py --prompts-dir)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SoftPromptError(f"--prompts-dir {folder}: no such folder")
    found = {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and any(p.glob("epoch_*"))}
    if not found:
        raise SoftPromptError(f"--prompts-dir {folder}: no run folder with a checkpoint in it")
    return found
