"""Checkpoints: the prompt plus what an exact resume needs, written atomically.

    checkpoints/<run>/epoch_003/
        prompt.safetensors         the trained prompt [P, H]      (what evaluation loads)
        prompt.json                base model, sizes, init, task, epoch
        trainer_state.safetensors  AdamW moments and step, RNG states
        trainer_state.json         epoch, global step, config, SHA-256 of both tensor files
    checkpoints/<run>/latest       the name of the newest complete checkpoint

A checkpoint is written under a temporary name, flushed to disk and then
renamed, and `latest` moves only after that, so a crash at any moment leaves
either the old checkpoint or the new one, never half of one. No pickle:
tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import SoftPromptError
from .model import PROMPT_FILE, SoftPromptModel

STATE_FILE = "trainer_state.safetensors"
STATE_META = "trainer_state.json"
LATEST = "latest"
CRASH_ENV = "SOFTPROMPT_TEST_CRASH"  # test hook: "checkpoint" dies inside a checkpoint write


def epoch_dir(run_dir: Path, epoch: int) -> Path:
    return run_dir / f"epoch_{epoch:03d}"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    run_dir: Path,
    epoch: int,
    global_step: int,
    model: SoftPromptModel,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    prompt_meta: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write epoch_<epoch>/ atomically and point `latest` at it."""
    final = epoch_dir(run_dir, epoch)
    tmp = run_dir / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    model.save_prompt(tmp, **prompt_meta, epoch=epoch)
    tensors, optim_meta = _optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / STATE_FILE))
    if os.environ.get(CRASH_ENV) == "checkpoint":
        os._exit(137)  # simulate kill -9 halfway through the write
    meta = {
        "epoch": epoch,
        "global_step": global_step,
        "optimizer": optim_meta,
        "config": config,
        "sha256": {name: sha256(tmp / name) for name in (PROMPT_FILE, STATE_FILE)},
        **(extra or {}),
    }
    (tmp / STATE_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for f in tmp.iterdir():
        _fsync(f)
    _fsync(tmp)
    if final.exists():  # a resumed run re-writing an epoch the crashed run had reached
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync(run_dir)
    write_text_atomic(run_dir / LATEST, final.name + "\n")
    return final


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            tensors[f"optim.{pid}.{key}"] = value.detach().cpu() if torch.is_tensor(value) else torch.tensor(value)
    return tensors, {"param_groups": state["param_groups"]}


def verify(ckpt: Path) -> str | None:
    """Why a checkpoint directory is not usable for resume, or None if it is."""
    meta_path = ckpt / STATE_META
    if not meta_path.is_file():
        return f"{ckpt}: no {STATE_META}"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        sums = meta["sha256"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return f"{ckpt}/{STATE_META}: unreadable"
    for name, digest in sums.items():
        path = ckpt / name
        if not path.is_file():
            return f"{ckpt}: {name} is missing"
        if sha256(path) != digest:
            return f"{ckpt}: {name} does not match its recorded SHA-256 (corrupted or truncated)"
    return None


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete-looking epoch_* folders, oldest first."""
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.glob("epoch_[0-9][0-9][0-9]*") if p.is_dir())


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `latest` names, else the newest epoch folder, else None."""
    marker = run_dir / LATEST
    if marker.is_file():
        named = run_dir / marker.read_text(encoding="utf-8").strip()
        if named.is_dir():
            return named
    found = checkpoints(run_dir)
    return found[-1] if found else None


def find_resume_checkpoint(run_dir: Path, warn) -> Path | None:
    """The newest checkpoint that passes its SHA-256 check; bad ones are reported by name."""
    for ckpt in reversed(checkpoints(run_dir)):
        problem = verify(ckpt)
        if problem is None:
            return ckpt
        warn(f"warning: skipping checkpoint {problem}; trying the one before")
    return None


def load_trainer_state(ckpt: Path, model: SoftPromptModel, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore prompt, optimizer and RNG state; returns the checkpoint's metadata."""
    meta = json.loads((ckpt / STATE_META).read_text(encoding="utf-8"))
    model.load_prompt(ckpt)
    tensors = load_file(str(ckpt / STATE_FILE))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    except (ValueError, KeyError) as err:
        raise SoftPromptError(f"{ckpt}: optimizer state does not fit this run ({err})") from err
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    return meta
