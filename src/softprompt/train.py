"""Train a soft prompt on a frozen causal LM: one AdamW loop, read top to bottom.

    python scripts/train.py --config configs/smoke/sum.yaml

Per epoch: a seeded batch order; per micro-batch: forward, backward; per
optimizer step: learning rate, clip, step; step lines every `log_every`
micro-batches; at the end of the epoch: average train and validation loss,
and a checkpoint every `save_every` epochs and after the last (and, with
`save_every_steps`, one inside the epoch every that many optimizer steps, from
which --resume continues mid-epoch exactly). Log lines go to stdout in the
reference format and, as JSON, to <run>/log.jsonl.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import __version__, distributed
from .checkpoint import (
    LATEST,
    checkpoints,
    crash_point,
    find_resume_checkpoint,
    load_trainer_state,
    save_checkpoint,
    write_text_atomic,
)
from .config import Config, NonFinite, Precision, Schedule
from .data import batch_order, iter_batches, lengths_of, load_task_data
from .devices import autocast, pick_device
from .errors import SoftPromptError
from .hub import context_window
from .model import SoftPromptModel, build_model, enable_checkpointing
from .plots import LOG_FILE, plot_losses

CONFIG_FILE = "config.yaml"


def lr_at(step: int, cfg: Config, total_steps: int) -> float:
    t = cfg.train
    if t.schedule is Schedule.CONSTANT:
        return t.lr
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    return t.lr * max(0.0, (total_steps - step) / max(1, total_steps - t.warmup_steps))


@torch.no_grad()
def mean_loss(
    model: SoftPromptModel, ds, cfg: Config, device: torch.device, pad_id: int, d: distributed.Dist | None = None
) -> float:
    """Mean of batch losses over a split in a fixed order (the reference's 'Average val loss').

    Under torchrun each rank scores every world-th batch and the sums are added up.
    """
    d = d or distributed.Dist()  # a single process
    was_training = model.training
    model.eval()
    crash_point("eval")  # test hook (SOFTPROMPT_TEST_CRASH); a no-op otherwise
    order = list(range(len(ds)))
    batches = [order[i : i + cfg.train.eval_batch_size] for i in range(0, len(order), cfg.train.eval_batch_size)]
    total = torch.zeros((), device=device)
    for batch in iter_batches(ds, batches[d.rank :: d.world], pad_id):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, cfg.train.precision):
            total += model(**batch).loss.float()
    model.train(was_training)
    return (distributed.all_sum(total, d) / max(1, len(batches))).item()


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


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b and key != "source":
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


def _restore(run_dir, model, optimizer, scaler, d, device, warn) -> tuple[str | None, dict[str, Any]]:
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
        with torch.no_grad():
            model.prompt.copy_(
                distributed.broadcast_tensor(
                    model.prompt.detach() if d.main else None, model.prompt.shape, torch.float32, device, d
                )
            )
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


def train(
    cfg: Config,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    echo: Callable[[str], None] = print,
    results_dir: str | Path | None = "results",
) -> Path:
    """Train the prompt described by `cfg`; returns the run directory.

    Afterwards the loss curves go to <results_dir>/<run_name>/loss.png (None: no plot).
    Under torchrun every rank runs this function; rank 0 alone talks and writes.
    """
    d, device_name = distributed.init(cfg.train.device, cfg.train.dist_timeout_minutes)
    try:
        run_dir = _train(cfg, d, device_name, resume, overwrite, quiet, echo)
    finally:
        distributed.shutdown(d)
    if d.main and results_dir is not None:
        echo(f"Loss curves: {plot_losses(run_dir, Path(results_dir) / cfg.run_name / 'loss.png')}")
    return run_dir


def _train(cfg, d, device_name, resume, overwrite, quiet, echo) -> Path:
    say = echo if d.main else (lambda msg: None)
    warn = (lambda msg: print(msg, file=sys.stderr, flush=True)) if d.main else (lambda msg: None)
    with distributed.main_first(d):
        run_dir = prepare_run_dir(cfg, resume, overwrite) if d.main else cfg.run_dir
        device = pick_device(device_name)
        torch.manual_seed(cfg.train.seed)
        model, tokenizer = build_model(cfg.model, seed=cfg.train.seed)
        data = load_task_data(cfg, tokenizer, context_window(model.base))
    if overwrite and not resume and d.main:  # only now that config, model and data have loaded without error
        for p in earlier_run(run_dir):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    model.to(device)
    if cfg.train.gradient_checkpointing:
        enable_checkpointing(model.base)
    pad_id = tokenizer.pad_token_id
    train_ds, val_ds = data.splits["train"], data.splits["validation"]
    for split in data.splits:
        if data.truncated_sources[split] or data.truncated_targets[split]:
            warn(
                f"note: {split}: {data.truncated_sources[split]} source(s) cut to {data.source_budget} tokens, "
                f"{data.truncated_targets[split]} target(s) cut to {cfg.data.max_target_tokens} tokens"
            )

    optimizer = torch.optim.AdamW(
        [model.prompt], lr=cfg.train.lr, betas=cfg.train.betas, eps=cfg.train.eps, weight_decay=cfg.train.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision is Precision.FP16)
    forward = model
    if d.enabled:  # averages the prompt's gradient over ranks in backward
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    lengths = lengths_of(train_ds)
    accum = cfg.train.grad_accum_steps
    micro_batches = math.ceil(len(train_ds) / cfg.train.batch_size)
    steps_per_epoch = math.ceil(micro_batches / accum) if not d.enabled else micro_batches // (accum * d.world)
    total_steps = steps_per_epoch * cfg.train.epochs

    start_epoch, start_micro, global_step, progress = 0, 0, 0, {}
    log_path = run_dir / LOG_FILE
    if resume:
        ckpt, meta = _restore(run_dir, model, optimizer, scaler, d, device, warn)
        if ckpt is None:  # killed before its first checkpoint: nothing to continue, so start over
            warn(f"note: --resume: no usable checkpoint in {run_dir}; starting from the beginning")
        else:
            start_epoch, global_step = meta["epoch"], meta["global_step"]
            start_micro, progress = meta.get("micro_batch", 0), meta.get("progress", {})
            for diff in config_differences(meta.get("config", {}), cfg.to_dict()):
                warn(f"warning: config differs from the checkpoint ({diff}); the current config is used")
            into = f", {start_micro} micro-batches into epoch {start_epoch + 1}" if start_micro else ""
            say(f"Resuming from {ckpt} (epoch {start_epoch}, step {global_step}{into})")
        if d.main:
            _truncate_log(log_path, start_epoch, start_micro * d.world)
    if d.main:
        (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    prompt_meta = {
        "task": cfg.task,
        "init": cfg.model.init.value,
        "init_text": cfg.model.init_text,
        "softprompt_version": __version__,
    }

    def log(record: dict[str, Any]) -> None:
        if d.main:
            with log_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def stop_if_nonfinite(first_bad: torch.Tensor, epoch: int) -> None:
        bad_step = int(distributed.all_max(first_bad, d).item())
        if bad_step > 0:
            raise SoftPromptError(
                f"the loss became NaN or infinite at micro-batch {bad_step} of epoch {epoch + 1}; the run stopped and "
                "its last checkpoint is kept. Lower train.lr, or set train.on_nonfinite: skip"
            )

    def save_mid_epoch(epoch: int, done: int, sums: dict[str, Any]) -> None:
        """Checkpoint `done` micro-batches into the epoch, with the running sums its log lines need."""
        # Ranks sum their own losses; the checkpoint keeps the total (rank 0 takes it up on resume).
        sums = {k: distributed.all_sum(v, d).item() if torch.is_tensor(v) else v for k, v in sums.items()}
        if d.main:
            path = save_checkpoint(
                run_dir,
                epoch,
                global_step,
                model,
                optimizer,
                cfg.to_dict(),
                prompt_meta,
                extra={"progress": sums, "softprompt_version": __version__},
                micro_batch=done,
                scaler=scaler,
            )
            say(f"Saved checkpoint {path}")
        distributed.barrier(d)

    every_steps = cfg.train.save_every_steps
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        order = batch_order(lengths, cfg.train.batch_size, cfg.train.seed, epoch, cfg.data.group_by_length)
        batches, dropped = distributed.shard(order, d, accum)
        if dropped and epoch == start_epoch:
            warn(
                f"note: {dropped} micro-batch(es) per epoch left out: they do not fill a global batch of "
                f"{d.world} ranks x {accum} accumulation steps"
            )
        first = start_micro if epoch == start_epoch else 0  # a mid-epoch checkpoint resumes here
        restored = progress if first else {}
        own = d.main  # only one rank carries the restored loss sums, so their all-reduce counts them once
        # Losses are summed on the device; .item() (a host sync) only when a line is printed.
        epoch_sum = torch.tensor(restored.get("epoch_sum", 0.0) if own else 0.0, device=device)
        window_sum = torch.tensor(restored.get("window_sum", 0.0) if own else 0.0, device=device)
        window_n, counted, skipped = (int(restored.get(k, 0)) for k in ("window_n", "counted", "skipped"))
        first_bad = torch.zeros((), dtype=torch.long, device=device)  # 1-based step of the first NaN/inf
        bar = tqdm(
            total=len(batches),
            initial=first,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            leave=False,
            dynamic_ncols=True,
            disable=True if (quiet or not d.main) else None,
        )
        for i, batch in enumerate(iter_batches(train_ds, batches[first:], pad_id), start=first):
            torch.manual_seed(batch_seed(cfg.train.seed, epoch, i, d.rank))
            group_start = (i // accum) * accum
            group_size = min(accum, len(batches) - group_start)
            last_of_group = i + 1 == group_start + group_size
            lr = lr_at(global_step, cfg, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr

            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            sync = forward.no_sync() if (d.enabled and not last_of_group) else contextlib.nullcontext()
            with sync:
                with autocast(device, cfg.train.precision):
                    loss = forward(**batch).loss
                finite = torch.isfinite(loss)
                if cfg.train.on_nonfinite is NonFinite.SKIP:
                    # Skipping must be decided now, which costs one host sync per micro-batch.
                    if not bool(distributed.all_min(finite.long(), d).item()):
                        skipped += 1
                        warn(
                            f"warning: non-finite loss at epoch {epoch + 1}, step {i + 1}; batch skipped "
                            f"({skipped} this epoch; the gradients accumulated so far in this step are dropped too)"
                        )
                        optimizer.zero_grad(set_to_none=True)
                        bar.update()
                        continue
                else:
                    first_bad = torch.where((first_bad == 0) & ~finite, torch.full_like(first_bad, i + 1), first_bad)
                scaler.scale(loss / group_size).backward()

            if last_of_group:
                if cfg.train.max_grad_norm is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_([model.prompt], cfg.train.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)  # free the gradient as soon as we can
                global_step += 1

            epoch_sum += loss.detach().float()
            window_sum += loss.detach().float()
            window_n += 1
            counted += 1
            bar.update()
            # Step lines as the reference prints them: micro-batch 0 of the epoch and every log_every-th after it,
            # counted over all ranks' micro-batches in single-process order, each with that micro-batch's loss.
            ranks_now = distributed.round_indices(i, d, accum)
            due = [j for j in ranks_now if j % cfg.train.log_every == 0]
            if due:  # every rank computes the same list, so all of them join the collectives below
                stop_if_nonfinite(first_bad, epoch)
                mine = torch.zeros(d.world, device=device)
                mine[d.rank] = loss.detach().float()
                losses = distributed.all_sum(mine, d).tolist()
                window = (distributed.all_sum(window_sum, d) / (window_n * d.world)).item()
                for j in due:
                    step_loss = losses[ranks_now.index(j)]
                    say(f"Epoch: {epoch} | Step: {j} | Loss: {step_loss:.6f}")
                    log(
                        {
                            "type": "step",
                            "epoch": epoch,
                            "step": j,
                            "global_step": global_step,
                            "loss": step_loss,
                            "window_loss": window,
                            "lr": lr,
                        }
                    )
                window_sum.zero_()
                window_n = 0
            if last_of_group and every_steps and global_step % every_steps == 0 and i + 1 < len(batches):
                stop_if_nonfinite(first_bad, epoch)  # never checkpoint past a NaN
                save_mid_epoch(
                    epoch,
                    i + 1,
                    dict(
                        epoch_sum=epoch_sum, window_sum=window_sum, window_n=window_n, counted=counted, skipped=skipped
                    ),
                )
        bar.close()
        stop_if_nonfinite(first_bad, epoch)

        # With every batch skipped there is no average: NaN, not a misleading 0.
        train_loss = (distributed.all_sum(epoch_sum, d) / (counted * d.world)).item() if counted else math.nan
        val_loss = mean_loss(model, val_ds, cfg, device, pad_id, d)
        say(f"Epoch: {epoch + 1} | Average train loss: {train_loss:.6f}")
        say(f"Epoch: {epoch + 1} | Average val loss: {val_loss:.6f}")
        log(
            {
                "type": "epoch",
                "epoch": epoch + 1,
                "global_step": global_step,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "skipped_batches": skipped,
                "time": time.time(),
            }
        )

        if (epoch + 1) % cfg.train.save_every == 0 or epoch + 1 == cfg.train.epochs:
            if d.main:
                path = save_checkpoint(
                    run_dir,
                    epoch + 1,
                    global_step,
                    model,
                    optimizer,
                    cfg.to_dict(),
                    prompt_meta,
                    extra={"train_loss": train_loss, "val_loss": val_loss, "softprompt_version": __version__},
                    scaler=scaler,
                )
                say(f"Saved checkpoint {path}")
            distributed.barrier(d)
    return run_dir
