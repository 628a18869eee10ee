"""Checkpoints: the prompt plus what an exact resume needs, written atomically.

    checkpoints/<run>/epoch_003/
        prompt.safetensors         the trained prompt [P, H]      (what evaluation loads)
        prompt.json                base model, sizes, init, task, epoch
        trainer_state.safetensors  AdamW moments and step (no RNG state: training reseeds torch per micro-batch)
        trainer_state.json         epoch, global step, processes, config, SHA-256 of both tensor files
    checkpoints/<run>/epoch_003_step_000250/   the same, 250 micro-batches into the 4th epoch
    checkpoints/<run>/latest       the name of the newest complete checkpoint

epoch_NNN holds the state after NNN epochs; epoch_NNN_step_MMMMMM (written
every train.save_every_steps optimizer steps) the state MMMMMM micro-batches
into the next epoch, named as the log line of that moment ("Epoch: 3 | Step:
250"). Only the newest of those mid-epoch checkpoints is kept: each one, and
each epoch checkpoint, deletes the mid-epoch checkpoints it supersedes.

A checkpoint is written under a temporary name, flushed to disk and then
renamed, and `latest` moves only after that, so a crash at any moment leaves
either the old checkpoint or the new one, never half of one. Each checkpoint
records the SHA-256 of its files; one that fails the check (a flipped bit, a
truncated copy) is reported by name and passed over for the one before. A
checkpoint is never written from a prompt or loss that is NaN or infinite.
No pickle: tensors go to safetensors, everything else to JSON.

Finding one: `latest_checkpoint(run_dir)` (the newest that passes its check),
`resolve_checkpoint(cfg, given)` (what evaluation and serving load: the one
given, else the run's latest, or an error naming the training command).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import testing
from .config import Config
from .errors import SoftPromptError, first_line
from .files import fsync, sha256, write_text_atomic
from .model import PROMPT_FILE, PROMPT_META, SoftPromptModel, read_prompt
from .optim_state import load_optimizer_tensors, optimizer_tensors

STATE_FILE = "trainer_state.safetensors"
STATE_META = "trainer_state.json"
LATEST = "latest"
HASHED = (PROMPT_FILE, PROMPT_META, STATE_FILE)
"""Files whose SHA-256 trainer_state.json records (the tensors, and the metadata that names the base model)."""

TRAINABLE = "trainable."
"""Prefix of the encoder weights' names in trainer_state.safetensors (p_tuning, prefix_tuning)."""

_NAME = re.compile(r"epoch_(\d{3,})(?:_step_(\d{6,}))?")


def checkpoint_dir(run_dir: Path, epoch: int, micro_batch: int = 0) -> Path:
    """epoch_<epochs done>, or epoch_<epochs done>_step_<micro-batches into the next epoch>."""
    return run_dir / (f"epoch_{epoch:03d}" + (f"_step_{micro_batch:06d}" if micro_batch else ""))


def position(ckpt: Path) -> tuple[int, int] | None:
    """(epochs done, micro-batches into the next epoch) from a checkpoint's name; None if not one.

    Numeric, so epoch_1000 sorts after epoch_999 and epoch_002_step_000005 between epoch_002 and epoch_003.
    """
    m = _NAME.fullmatch(ckpt.name)
    return (int(m[1]), int(m[2] or 0)) if m else None


def nonfinite_problem(model: SoftPromptModel, losses: dict[str, Any]) -> str | None:
    """Why a state must not be saved (a NaN/inf prompt or loss), or None."""
    bad = [f"{name} {value}" for name, value in losses.items() if isinstance(value, float) and not math.isfinite(value)]
    if not bool(torch.isfinite(model.final_prompt()).all()):
        bad.insert(0, "the prompt holds NaN or infinite values")
    return ", ".join(bad) or None


def save_checkpoint(
    run_dir: Path,
    epoch: int,
    global_step: int,
    model: SoftPromptModel,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    prompt_meta: dict[str, Any],
    extra: dict[str, Any] | None = None,
    micro_batch: int = 0,
    scaler: torch.amp.GradScaler | None = None,
    world_size: int = 1,
) -> Path:
    """Write epoch_<epoch>/ (or epoch_<epoch>_step_<micro_batch>/) atomically and point `latest` at it.

    `epoch`: epochs done; `micro_batch`: micro-batches (per process) into the next; `global_step`: optimizer
    steps taken. Refuses (SoftPromptError) when the prompt or a loss in `extra` is NaN or
    infinite, so the last good checkpoint stays the newest one. Afterwards
    deletes the mid-epoch checkpoints older than this one. `world_size`: the
    processes training, each `micro_batch` micro-batches into the epoch (so another number can resume it).
    """
    final = checkpoint_dir(run_dir, epoch, micro_batch)
    problem = nonfinite_problem(model, {k: v for k, v in (extra or {}).items() if k.endswith("loss")})
    if problem:
        last = latest_checkpoint(run_dir, warn=lambda msg: None)
        kept = f"the last good checkpoint, {last}, is kept" if last else "no checkpoint was written"
        raise SoftPromptError(
            f"{final.name}: {problem}; the run stopped without saving it and {kept}. "
            "Lower train.lr, or resume from the last good checkpoint"
        )
    where = {"epoch": epoch, "micro_batch": micro_batch, "global_step": global_step, "world_size": world_size}
    # fp16's loss scale and growth counter (plain numbers); without them a resumed run restarts at 65,536
    # and skips its first steps for overflow.
    more = {
        **({"grad_scaler": scaler.state_dict()} if scaler is not None and scaler.is_enabled() else {}),
        **(extra or {}),
    }
    tmp = run_dir / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        model.save_prompt(tmp, **prompt_meta, epoch=epoch, **({"micro_batch": micro_batch} if micro_batch else {}))
        _write_state(tmp, optimizer, where, config, more, model.training_state())
    except (OSError, SafetensorError) as err:  # a full disk, most likely: the half-written folder goes
        shutil.rmtree(tmp, ignore_errors=True)
        last = latest_checkpoint(run_dir, warn=lambda msg: None)
        kept = f"the previous checkpoint, {last}, and `latest` are intact" if last else "no checkpoint was written"
        raise SoftPromptError(
            f"cannot write checkpoint {final} ({_reason(err)}); {kept}: free some space and continue with --resume"
        ) from err
    _publish(run_dir, tmp, final)
    return final


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or first_line(err)


def _write_state(tmp: Path, optimizer, where: dict, config: dict, more: dict, trainable: dict) -> None:
    """The optimizer tensors, the method's own training state (`trainable.*`: p_tuning's and prefix_tuning's
    encoder weights; none for prompt tuning) and trainer_state.json (position, config, SHA-256s, `more`)
    into tmp, flushed."""
    tensors, groups = optimizer_tensors(optimizer)
    tensors |= {f"{TRAINABLE}{k}": v.detach().float().cpu() for k, v in trainable.items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / STATE_FILE))
    testing.point("checkpoint")
    sums = {name: sha256(tmp / name) for name in HASHED}
    meta = {**where, "optimizer": {"param_groups": groups}, "config": config, "sha256": sums, **more}
    (tmp / STATE_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for f in tmp.iterdir():
        fsync(f)
    fsync(tmp)


def _publish(run_dir: Path, tmp: Path, final: Path) -> None:
    """Rename the finished tmp folder to its real name, move `latest`, drop superseded mid-epoch checkpoints."""
    if final.exists():  # a resumed run re-writing an epoch the crashed run had reached
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync(run_dir)
    testing.point("latest")
    try:
        write_text_atomic(run_dir / LATEST, final.name + "\n")
    except OSError as err:  # the checkpoint is whole under its name, which is what resume and evaluation look for
        raise SoftPromptError(
            f"cannot update {run_dir / LATEST} ({err.strerror}); the new checkpoint {final} is complete and "
            "--resume will find it: free some space and continue with --resume"
        ) from err
    here = position(final)
    for old in checkpoints(run_dir):
        if position(old)[1] and position(old) < here:  # a mid-epoch checkpoint this one supersedes
            shutil.rmtree(old, ignore_errors=True)


def verify(ckpt: Path) -> str | None:
    """Why a checkpoint directory is not usable, or None if every recorded SHA-256 matches."""
    meta_path = ckpt / STATE_META
    if not meta_path.is_file():
        return f"{ckpt}: no {STATE_META}"
    try:
        sums = json.loads(meta_path.read_text(encoding="utf-8"))["sha256"]
        if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
            raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return f"{ckpt}/{STATE_META}: unreadable (not the JSON a checkpoint writes)"
    for name in (PROMPT_FILE, STATE_FILE):
        if name not in sums:
            return f"{ckpt}/{STATE_META}: records no SHA-256 for {name}"
    for name, digest in sums.items():
        path = ckpt / name
        if not path.is_file():
            return f"{ckpt}: {name} is missing"
        if sha256(path) != digest:
            return f"{ckpt}: {name} does not match its recorded SHA-256 (corrupted or truncated)"
    return None


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete-looking checkpoint folders (epoch_*), oldest first."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.glob("epoch_*") if p.is_dir() and position(p) is not None]
    return sorted(found, key=position)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def latest_checkpoint(run_dir: Path, warn: Callable[[str], None] = _stderr) -> Path | None:
    """The newest checkpoint that passes its SHA-256 check, else None; bad ones are reported by name.

    That is the one `latest` names, or a newer complete folder when a crash
    came between its rename and the marker's move (the marker is for people
    and other tools; a folder only gets its real name once complete).
    """
    found = checkpoints(run_dir)
    while found:
        ckpt = found.pop()
        problem = verify(ckpt)
        if problem is None:
            return ckpt
        warn(
            f"warning: skipping checkpoint {problem}; "
            + (f"falling back to {found[-1].name}" if found else "no older checkpoint")
        )
    return None


find_resume_checkpoint = latest_checkpoint  # what --resume starts from is what evaluation reads


def resolve_prompt_dir(path: str | Path) -> Path:
    """A checkpoint folder as given, or a run folder's latest checkpoint."""
    path = Path(path)
    if path.is_dir() and not (path / PROMPT_FILE).is_file():
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
    return path


def resolve_checkpoint(cfg: Config, checkpoint: str | Path | None = None) -> Path:
    """The checkpoint to score or serve: the one given (its SHA-256 checked), else the run's latest.

    A clear error naming the training command when there is none.
    """
    train_cmd = f"python scripts/train.py --config {cfg.source}"
    if checkpoint is None:
        found = latest_checkpoint(cfg.run_dir)
        if found is None:
            raise SoftPromptError(f"no checkpoint in {cfg.run_dir}; train one first with: {train_cmd}")
        return found
    path = Path(checkpoint)
    if not path.is_dir():
        raise SoftPromptError(f"checkpoint {path} not found; checkpoints of this config are made by: {train_cmd}")
    if (path / STATE_META).is_file():  # a training checkpoint records its files' SHA-256: check them
        problem = verify(path)
        if problem:
            raise SoftPromptError(f"checkpoint {problem}")
    return path


def load_trainer_state(
    ckpt: Path, model: SoftPromptModel, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None
) -> dict[str, Any]:
    """Restore prompt, optimizer and (fp16) loss-scaler state; returns the checkpoint's metadata."""
    problem = verify(ckpt)
    if problem:
        raise SoftPromptError(f"cannot resume: {problem}")
    meta = json.loads((ckpt / STATE_META).read_text(encoding="utf-8"))
    saved_prompt, prompt_meta = read_prompt(ckpt)
    method = prompt_meta.get("method", "prompt_tuning")
    if method != model.method:
        raise SoftPromptError(
            f"cannot resume from {ckpt}: it holds a {method} prompt but this run's prompt.method is {model.method}; "
            "resume with the config it was trained with, or start a new run elsewhere"
        )
    saved, shape = saved_prompt.shape, model.prompt.shape
    if saved != shape:  # checked before anything is loaded: this run's prompt stays as it was
        raise SoftPromptError(
            f"cannot resume from {ckpt / PROMPT_FILE}: its prompt has shape {list(saved)} but this run's is "
            f"{list(shape)} (model.prompt_length x the base's hidden size); resume with the config it was trained "
            "with, or start a new run elsewhere (another train.output_dir or run name)"
        )
    model.load_prompt(ckpt)
    tensors = load_file(str(ckpt / STATE_FILE))
    trainable = {k.removeprefix(TRAINABLE): v for k, v in tensors.items() if k.startswith(TRAINABLE)}
    model.load_training_state(trainable, str(ckpt / STATE_FILE))
    try:
        load_optimizer_tensors(optimizer, tensors, meta["optimizer"]["param_groups"])
    except (ValueError, KeyError) as err:
        raise SoftPromptError(f"{ckpt}: optimizer state does not fit this run ({err})") from err
    if scaler is not None and scaler.is_enabled() and meta.get("grad_scaler"):
        scaler.load_state_dict(meta["grad_scaler"])
    return meta
