"""Where a run starts: its folder (fresh, or kept for --resume) and, on --resume, the checkpoint it continues from.

    python scripts/train.py --config configs/sum.yaml --resume
    # Resuming from checkpoints/sum/epoch_002_step_000004 (epoch 2, step 16, 4 micro-batches into epoch 3)

`restore` loads the newest good checkpoint into every rank and returns a `Start`: epochs done, micro-batches
(per rank of this run) into the next, optimizer steps taken, and the epoch's running sums. A checkpoint's
position counts micro-batches per process; `resume_position` converts it to this run's number of processes,
so a run resumed on another number continues at the same micro-batch. Log records written after the
checkpoint are dropped (`_truncate_log`), and a config that differs from the checkpoint's is named
(`config_differences`). `batch_seed` reseeds torch per micro-batch, which makes the resumed run draw the
same dropout masks as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from . import distributed
from .checkpoint import LATEST, checkpoints, find_resume_checkpoint, load_trainer_state
from .config import Config
from .errors import SoftPromptError
from .files import write_text_atomic
from .runlog import LOG_FILE, RunLog

CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class Start:
    """Where training begins: `epoch` epochs done, `micro_batch` micro-batches (this run's, per rank) into
    the next, `global_step` optimizer steps taken, and the restored running sums (`progress`, {} if none)."""

    epoch: int = 0
    micro_batch: int = 0
    global_step: int = 0
    progress: dict[str, Any] = field(default_factory=dict)


def earlier_run(run_dir: Path) -> list[Path]:
    """What an earlier run left in run_dir: checkpoints, log, `latest`."""
    return checkpoints(run_dir) + [p for p in (run_dir / LOG_FILE, run_dir / LATEST) if p.exists()]


def prepare_run_dir(cfg: Config, resume: bool, overwrite: bool) -> Path:
    """Create the run folder; refuse to clobber an earlier run unless told to (--overwrite deletes it later)."""
    run_dir = cfg.run_dir
    if earlier_run(run_dir) and not (resume or overwrite):
        raise SoftPromptError(
            f"{run_dir} already holds a run; continue it with --resume, or start afresh with --overwrite "
            "(which deletes its checkpoints)"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise SoftPromptError(f"cannot write to the run directory {run_dir} ({err.strerror})") from err
    return run_dir


def write_config(cfg: Config, run_dir: Path) -> None:
    """<run>/config.yaml: the resolved config of the run, for people and other tools (resume compares with
    the copy inside each checkpoint)."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    try:
        (run_dir / CONFIG_FILE).write_text(text, encoding="utf-8")
    except OSError as err:
        raise SoftPromptError(f"cannot write {run_dir / CONFIG_FILE} ({err.strerror})") from err


def restore(cfg: Config, d: distributed.Dist, device: torch.device, run_dir: Path, trained, log: RunLog) -> Start:
    """--resume: load the newest good checkpoint into `trained` (model, optimizer, scaler) on every rank."""
    ckpt, meta = _load_checkpoint(run_dir, trained.model, trained.optimizer, trained.scaler, d, device, log.note)
    start = Start()
    if ckpt is None:  # killed before its first checkpoint: nothing to continue, so start over
        log.note(f"note: --resume: no usable checkpoint in {run_dir}; starting from the beginning")
    else:
        micro_batch, progress = resume_position(ckpt, meta, d, cfg.train.grad_accum_steps, log.note)
        start = Start(meta["epoch"], micro_batch, meta["global_step"], progress)
        for diff in config_differences(meta.get("config", {}), cfg.to_dict()):
            log.note(f"warning: config differs from the checkpoint ({diff}); the current config is used")
        into = f", {micro_batch} micro-batches into epoch {start.epoch + 1}" if micro_batch else ""
        log.line(f"Resuming from {ckpt} (epoch {start.epoch}, step {start.global_step}{into})")
    if d.main:
        _truncate_log(log.log_path, start.epoch, start.micro_batch * d.world)
    return start


def resume_position(ckpt: str, meta: dict[str, Any], d: distributed.Dist, accum: int, note) -> tuple[int, dict]:
    """A checkpoint's micro-batches into its epoch, counted per rank of this run, and its running sums.

    The checkpoint counts its writer's micro-batches per process, `world_size` processes, so a run on another
    number of processes (another strategy, or one process) continues at the same micro-batch of the epoch.
    `accum`: this run's train.grad_accum_steps.
    """
    progress, world = meta.get("progress", {}), meta.get("world_size")
    if world is None:  # written before world_size was recorded: by as many processes, its counts per process
        world = d.world
        progress = progress | {k: progress[k] * world for k in ("counted", "window_n") if k in progress}
    saved_accum = meta.get("config", {}).get("train", {}).get("grad_accum_steps", accum)
    if world != d.world and world * saved_accum != d.world * accum:
        note(
            f"warning: {ckpt} was trained with a global batch of {world} process(es) x {saved_accum} accumulation "
            f"step(s), this run's is {d.world} x {accum}; set train.grad_accum_steps to keep it"
        )
    done = meta.get("micro_batch", 0) * world
    if done % (d.world * accum):
        raise SoftPromptError(
            f"cannot resume from {ckpt} with {d.world} process(es) x train.grad_accum_steps={accum}: it stopped "
            f"{done} micro-batches into epoch {meta['epoch'] + 1}, not at the end of one of this run's global "
            f"batches; resume with {world} process(es) x {saved_accum}, as it was trained, or from an epoch checkpoint"
        )
    return done // d.world, progress


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b and key not in ("source", "tracker", "strategy"):  # none changes what is trained
            out.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return out


def _truncate_log(path: Path, epochs_done: int, micro_batches: int = 0) -> None:
    """Drop log records the crashed run wrote after the checkpoint we resume from.

    The checkpoint holds `epochs_done` epochs and `micro_batches` (all ranks') of the next; step records
    carry the 0-based epoch they were in and their 0-based micro-batch, epoch records the 1-based number
    of the epoch they close.
    """
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
            if rec.get("type") == "epoch":
                kept = rec["epoch"] <= epochs_done
            else:
                kept = (rec["epoch"], rec["step"]) < (epochs_done, micro_batches)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by the crash
        if kept:
            keep.append(line)
    write_text_atomic(path, "".join(k + "\n" for k in keep))


def _load_checkpoint(run_dir, model, optimizer, scaler, d, device, warn) -> tuple[str | None, dict[str, Any]]:
    """(checkpoint, its metadata) after loading it into every rank; (None, {}) when there is none.

    Rank 0 alone looks for and reads the checkpoint, since only rank 0 writes them: on several nodes
    without a shared filesystem the other ranks' disks have none. It sends the decision, the metadata
    and the prompt and optimizer tensors to every rank, so all ranks resume from the same state.
    """
    found = None
    if d.main:
        try:
            ckpt = find_resume_checkpoint(run_dir, warn)
            meta = load_trainer_state(ckpt, model, optimizer, scaler) if ckpt is not None else {}
            state = optimizer.state_dict()["state"]
            tensors = [
                [pid, key, list(v.shape), str(v.dtype).removeprefix("torch.")]
                for pid, entry in state.items()
                for key, v in entry.items()
            ]
            found = {"ckpt": str(ckpt) if ckpt else None, "meta": meta, "tensors": tensors}
        except SoftPromptError as err:
            found = {"error": str(err)}
    found = distributed.broadcast_json(found, d, device)
    if "error" in found:  # every rank stops, rank 0's message is the one shown
        raise SoftPromptError(found["error"])
    if d.enabled and found["ckpt"] is not None:
        with torch.no_grad():  # the prompt, or an encoder's weights (p_tuning, prefix_tuning)
            for p in model.trainable_parameters():
                p.copy_(distributed.broadcast_tensor(p.detach() if d.main else None, p.shape, torch.float32, device, d))
        own = optimizer.state_dict()["state"]
        state: dict[int, dict[str, torch.Tensor]] = {}
        for pid, key, shape, dtype in found["tensors"]:
            mine = own[pid][key] if d.main else None
            value = distributed.broadcast_tensor(mine, shape, getattr(torch, dtype), device, d)
            state.setdefault(pid, {})[key] = value.cpu() if key == "step" else value  # AdamW keeps `step` on the CPU
        if not d.main:
            meta = found["meta"]
            optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
            if scaler.is_enabled() and meta.get("grad_scaler"):
                scaler.load_state_dict(meta["grad_scaler"])
    return found["ckpt"], found["meta"]


def batch_seed(seed: int, epoch: int, micro_batch: int, rank: int) -> int:
    """Each micro-batch (and rank) reseeds torch, so a run resumed at any checkpoint draws the same dropout masks."""
    return (((seed * 1_000_003 + epoch) * 1_000_033 + micro_batch) * 1_009 + rank) % 2**63
