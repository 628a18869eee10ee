"""Train a soft prompt on a frozen causal LM: one AdamW loop, read top to bottom.

    python scripts/train.py --config configs/smoke/sum.yaml

train -> setup -> restore (--resume) -> per epoch: run_epoch -> end_epoch. Per epoch: a seeded batch order;
per micro-batch: learning rate, forward/backward; at the end of each accumulation group: clip, step; step
lines every `log_every` micro-batches; with `save_every_steps`, a mid-epoch checkpoint every that many
optimizer steps (from which --resume continues exactly); at the end of the epoch: average train and
validation loss, and a checkpoint every `save_every` epochs and after the last. SIGTERM or SIGUSR1 stops
the run at the end of the optimizer step in progress, with a checkpoint there (`Preempted`; the script
exits 75). Output goes through `RunLog`: the reference's lines to stdout, notes to stderr, JSON records to
<run>/log.jsonl, and, with `train.tracker`, scalars to results/<run>/tensorboard/. Under torchrun, setup wraps
the model in DistributedDataParallel, or with `train.strategy: fsdp` shards its base (fsdp.py).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import __version__, distributed, fsdp, tracking
from .checkpoint import (
    LATEST,
    checkpoint_dir,
    checkpoints,
    find_resume_checkpoint,
    load_trainer_state,
    save_checkpoint,
    write_text_atomic,
)
from .config import Config, NonFinite, Precision, Schedule, Strategy, Tracker
from .data import batch_order, iter_batches, lengths_of, load_task_data
from .devices import autocast, pick_device
from .errors import SoftPromptError
from .hub import context_window
from .model import SoftPromptModel, build_model, enable_checkpointing
from .plots import LOG_FILE, plot_losses
from .testing import Hooks

CONFIG_FILE = "config.yaml"
EXIT_PREEMPTED = 75
"""scripts/train.py's exit status after SIGTERM or SIGUSR1 (BSD's EX_TEMPFAIL: try again, with --resume)."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # SLURM sends SIGUSR1 with --signal, and SIGTERM at the time limit


def lr_at(step: int, cfg: Config, total_steps: int) -> float:
    t = cfg.train
    if t.schedule is Schedule.CONSTANT:
        return t.lr
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    return t.lr * max(0.0, (total_steps - step) / max(1, total_steps - t.warmup_steps))


@torch.no_grad()
def mean_loss(
    model: SoftPromptModel,
    ds,
    cfg: Config,
    device: torch.device,
    pad_id: int,
    d: distributed.Dist | None = None,
    hooks: Hooks | None = None,
) -> float:
    """Mean of batch losses over a split in a fixed order (the reference's 'Average val loss').

    Under torchrun each rank scores every world-th batch and the sums are added up.
    """
    d = d or distributed.Dist()  # a single process
    was_training = model.training
    model.eval()
    if hooks is not None:
        hooks.crash_point("eval")
    order = list(range(len(ds)))
    batches = [order[i : i + cfg.train.eval_batch_size] for i in range(0, len(order), cfg.train.eval_batch_size)]
    mine = batches[d.rank :: d.world]
    # A sharded model's forward is a collective: a rank with one batch fewer runs one more, not counted.
    filler = batches[:1] * (-(-len(batches) // d.world) - len(mine)) if isinstance(model, FSDPModule) else []
    total = torch.zeros((), device=device)
    built = itertools.chain(iter_batches(ds, mine, pad_id, hooks), iter_batches(ds, filler, pad_id))
    for n, batch in enumerate(built):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, cfg.train.precision):
            loss = model(**batch).loss.float()
        if n < len(mine):
            total += loss
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


class RunLog:
    """The run's one output channel; on ranks other than 0 it stays silent.

    `line`: the reference's lines (steps, epochs, checkpoints) to stdout, through `echo`;
    `note`: notes and warnings to stderr; `record`: one JSON record appended to <run>/log.jsonl.
    """

    def __init__(self, main: bool, echo: Callable[[str], None], log_path: Path):
        self.main, self.echo, self.log_path = main, echo, log_path

    def line(self, msg: str) -> None:
        if self.main:
            self.echo(msg)

    def note(self, msg: str) -> None:
        if self.main:
            print(msg, file=sys.stderr, flush=True)

    def record(self, record: dict[str, Any]) -> None:
        if self.main:
            try:
                with self.log_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as err:  # a full disk: the checkpoints written so far are whole
                raise SoftPromptError(
                    f"cannot append to {self.log_path} ({err.strerror}); the last checkpoint is kept: "
                    "free some space and continue with --resume"
                ) from err


class Preempted(Exception):
    """Training stopped on SIGTERM/SIGUSR1 after writing a checkpoint to resume from (scripts exit 75)."""


class StopRequest:
    """Notes SIGTERM and SIGUSR1 while training runs (`with StopRequest() as stop:`); the loop stops at the
    next point where resuming is exact, the end of an optimizer step. A second signal changes nothing, so a
    checkpoint being written is finished, not cut. Outside the main thread (no handlers allowed) it only
    ever says no."""

    def __init__(self):
        self.signum, self._old = 0, {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._note) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _note(self, signum: int, frame) -> None:
        self.signum = self.signum or signum

    def agreed(self, d: distributed.Dist, device: torch.device) -> int:
        """The signal any rank got (0: none). Under torchrun a collective: every rank calls it at the same step."""
        if not d.enabled:
            return self.signum
        return int(distributed.all_max(torch.tensor(self.signum, device=device), d).item())


@dataclass
class RunningSums:
    """The epoch in progress: its loss sums (on the device: .item() is a host sync, paid only when a line is
    printed) and counts. A mid-epoch checkpoint keeps them as `progress` so the resumed run's lines match."""

    epoch_sum: torch.Tensor
    window_sum: torch.Tensor
    """Loss since the last step line, over `window_n` micro-batches."""
    window_n: int
    counted: int
    """Micro-batches in epoch_sum (skipped ones are not). Sums and counts are this rank's, and on rank 0 also
    those of the restored `progress` (all ranks' together, whatever their number then), so that summing them
    over ranks gives the epoch's."""
    skipped: int
    first_bad: torch.Tensor
    """1-based micro-batch of the first NaN/inf loss (0: none); never saved, as no checkpoint follows a NaN."""

    @classmethod
    def start(cls, device: torch.device, saved: dict[str, Any], own: bool) -> RunningSums:
        """From a checkpoint's `progress` ({} for a fresh epoch). Only one rank (`own`) carries the restored sums
        and counts, so their all-reduce counts them once."""
        return cls(
            torch.tensor(saved.get("epoch_sum", 0.0) if own else 0.0, device=device),
            torch.tensor(saved.get("window_sum", 0.0) if own else 0.0, device=device),
            *(int(saved.get(k, 0)) if own else 0 for k in ("window_n", "counted")),
            int(saved.get("skipped", 0)),
            torch.zeros((), dtype=torch.long, device=device),
        )

    def add(self, loss: torch.Tensor) -> None:
        self.epoch_sum += loss.detach().float()
        self.window_sum += loss.detach().float()
        self.window_n += 1
        self.counted += 1

    def totals(self, d: distributed.Dist) -> torch.Tensor:
        """[epoch_sum, window_sum, counted, window_n] added up over ranks (fp32, exact for counts below 2**24;
        a collective: all ranks call it)."""
        counts = self.epoch_sum.new_tensor([self.counted, self.window_n])
        return distributed.all_sum(torch.cat([self.epoch_sum.view(1), self.window_sum.view(1), counts]), d)

    def saved(self, d: distributed.Dist) -> dict[str, Any]:
        """What a mid-epoch checkpoint keeps: the totals over ranks (a collective: all ranks call it)."""
        epoch_sum, window_sum, counted, window_n = self.totals(d).tolist()
        return {
            "epoch_sum": epoch_sum,
            "window_sum": window_sum,
            "counted": round(counted),
            "window_n": round(window_n),
            "skipped": self.skipped,
        }


@dataclass
class Run:
    """What the loop works with: built once by `setup`; `global_step` counts optimizer steps."""

    cfg: Config
    d: distributed.Dist
    log: RunLog
    hooks: Hooks
    run_dir: Path
    device: torch.device
    model: SoftPromptModel
    forward: torch.nn.Module
    """The model (sharded in place with train.strategy fsdp), or under torchrun with ddp its
    DistributedDataParallel wrapper (which averages the gradient)."""
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    data: Any
    lengths: list[int]
    """Tokens per training example (what group_by_length sorts by)."""
    pad_id: int
    total_steps: int
    quiet: bool
    tracking: bool
    """train.tracker is set (and there is a results folder): every rank then counts tokens for it."""
    global_step: int = 0
    tracker: tracking.Tracker = field(default_factory=tracking.NoTracker)
    """Rank 0's tracker (the others' do nothing)."""
    stop: StopRequest = field(default_factory=StopRequest)
    grad_norm: torch.Tensor | None = None
    """The last optimizer step's gradient norm, before clipping (kept only when tracking)."""
    tokens: int = 0
    """Tokens (this rank's, padding excluded) since the last step line; for the tracker's tokens per second."""
    since: float = 0.0
    """perf_counter() at the last step line."""

    @property
    def prompt_meta(self) -> dict[str, Any]:
        m = self.cfg.model
        return {
            "task": self.cfg.task.name,
            "init": m.init.value,
            "init_text": m.init_text,
            "softprompt_version": __version__,
        }


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
    run_results = Path(results_dir) / cfg.run_name if results_dir is not None else None
    if cfg.train.tracker is Tracker.TENSORBOARD and run_results is not None:
        tracking.summary_writer()  # fail before any work when the package is missing
    d, device_name = distributed.init(cfg.train.device, cfg.train.dist_timeout_minutes)
    if cfg.train.strategy is Strategy.FSDP and not d.enabled:  # before any work, so nothing is touched
        raise SoftPromptError(
            "train.strategy: fsdp shards the base over several processes, but this run has one: launch it with "
            "`torchrun --nproc_per_node N scripts/train.py ...` (N >= 2), or set train.strategy: ddp"
        )
    log = RunLog(d.main, echo, cfg.run_dir / LOG_FILE)
    run = None
    try:
        run = setup(cfg, d, device_name, resume, overwrite, log, quiet)
        run.tracking = cfg.train.tracker is not Tracker.NONE and run_results is not None
        start_epoch, start_micro, progress = restore(run) if resume else (0, 0, {})
        if d.main:
            write_config(run)
            run.tracker = tracking.open_tracker(cfg.train.tracker, run_results, after_step=run.global_step)
        with run.stop:
            for epoch in range(start_epoch, cfg.train.epochs):
                first = start_micro if epoch == start_epoch else 0  # a mid-epoch checkpoint resumes here
                sums = run_epoch(run, epoch, first, progress if first else {}, note_dropped=epoch == start_epoch)
                end_epoch(run, epoch, sums)
    finally:
        if run is not None:
            run.tracker.close()
        distributed.shutdown(d)
    if d.main and results_dir is not None:
        log.line(f"Loss curves: {plot_losses(run.run_dir, Path(results_dir) / cfg.run_name / 'loss.png')}")
    return run.run_dir


def write_config(run: Run) -> None:
    text = yaml.safe_dump(run.cfg.to_dict(), sort_keys=False)
    try:
        (run.run_dir / CONFIG_FILE).write_text(text, encoding="utf-8")
    except OSError as err:
        raise SoftPromptError(f"cannot write {run.run_dir / CONFIG_FILE} ({err.strerror})") from err


def setup(cfg: Config, d, device_name: str, resume: bool, overwrite: bool, log: RunLog, quiet: bool) -> Run:
    """Run folder, device, model, data, optimizer; rank 0 first (it fills the caches the others read)."""
    with distributed.main_first(d):
        run_dir = prepare_run_dir(cfg, resume, overwrite) if d.main else cfg.run_dir
        device = pick_device(device_name, cfg.model.dtype)
        if device.type == "cpu":
            # Multi-threaded CPU kernels otherwise sum in a varying order: two runs on 2 threads drifted apart by
            # 9e-6 in 16 steps, and resume could not be bit-identical. (CUDA would also need CUBLAS_WORKSPACE_CONFIG.)
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.train.seed)
        model, tokenizer = build_model(cfg.model, seed=cfg.train.seed)
        data = load_task_data(cfg, tokenizer, context_window(model.base))
    if overwrite and not resume and d.main:  # only now that config, model and data have loaded without error
        for p in earlier_run(run_dir):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    sharded = d.enabled and cfg.train.strategy is Strategy.FSDP
    if not sharded:  # fully_shard moves the base to the device unit by unit
        model.to(device)
    if cfg.train.gradient_checkpointing:
        enable_checkpointing(model.base)
    for split in data.splits:
        if data.truncated_sources[split] or data.truncated_targets[split]:
            log.note(
                f"note: {split}: {data.truncated_sources[split]} source(s) cut to {data.source_budget} tokens, "
                f"{data.truncated_targets[split]} target(s) cut to {cfg.data.max_target_tokens} tokens"
            )
    t = cfg.train
    forward = model
    if sharded:  # in place; forward_backward averages the prompt's gradient
        held = fsdp.shard(model, d, device)
        log.note(
            f"note: train.strategy fsdp: the base's {sum(held):,} parameters sharded over {d.world} ranks "
            f"(each holds {', '.join(f'{n:,}' for n in held)})"
        )
    elif d.enabled:  # averages the prompt's gradient over ranks in backward
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW([model.prompt], lr=t.lr, betas=t.betas, eps=t.eps, weight_decay=t.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision is Precision.FP16)
    micro_batches = math.ceil(len(data.splits["train"]) / t.batch_size)
    accum = t.grad_accum_steps
    steps_per_epoch = math.ceil(micro_batches / accum) if not d.enabled else micro_batches // (accum * d.world)
    return Run(
        cfg, d, log, Hooks.from_env(), run_dir, device, model, forward, optimizer, scaler, data,
        lengths_of(data.splits["train"]), tokenizer.pad_token_id, steps_per_epoch * t.epochs, quiet, False,
    )  # fmt: skip


def restore(run: Run) -> tuple[int, int, dict[str, Any]]:
    """--resume: load the newest good checkpoint; returns (epochs done, micro-batches into the next, running sums)."""
    d, log = run.d, run.log
    ckpt, meta = _load_checkpoint(run.run_dir, run.model, run.optimizer, run.scaler, d, run.device, log.note)
    start_epoch, start_micro, progress = 0, 0, {}
    if ckpt is None:  # killed before its first checkpoint: nothing to continue, so start over
        log.note(f"note: --resume: no usable checkpoint in {run.run_dir}; starting from the beginning")
    else:
        start_epoch, run.global_step = meta["epoch"], meta["global_step"]
        start_micro, progress = resume_position(ckpt, meta, run)
        for diff in config_differences(meta.get("config", {}), run.cfg.to_dict()):
            log.note(f"warning: config differs from the checkpoint ({diff}); the current config is used")
        into = f", {start_micro} micro-batches into epoch {start_epoch + 1}" if start_micro else ""
        log.line(f"Resuming from {ckpt} (epoch {start_epoch}, step {run.global_step}{into})")
    if d.main:
        _truncate_log(log.log_path, start_epoch, start_micro * d.world)
    return start_epoch, start_micro, progress


def resume_position(ckpt: str, meta: dict[str, Any], run: Run) -> tuple[int, dict[str, Any]]:
    """A checkpoint's micro-batches into its epoch, counted per rank of this run, and its running sums.

    The checkpoint counts its writer's micro-batches per process, `world_size` processes, so a run on another
    number of processes (another strategy, or one process) continues at the same micro-batch of the epoch.
    """
    d, accum = run.d, run.cfg.train.grad_accum_steps
    progress, world = meta.get("progress", {}), meta.get("world_size")
    if world is None:  # written before world_size was recorded: by as many processes, its counts per process
        world = d.world
        progress = progress | {k: progress[k] * world for k in ("counted", "window_n") if k in progress}
    saved_accum = meta.get("config", {}).get("train", {}).get("grad_accum_steps", accum)
    if world != d.world and world * saved_accum != d.world * accum:
        run.log.note(
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


def run_epoch(run: Run, epoch: int, first: int, progress: dict[str, Any], note_dropped: bool) -> RunningSums:
    """Train one epoch from micro-batch `first` (0, or where a mid-epoch checkpoint stopped); returns its sums.

    Per micro-batch: lr, forward/backward; at the end of each accumulation group: clip, step; then log lines
    and, with save_every_steps, a mid-epoch checkpoint.
    """
    cfg, d, t = run.cfg, run.d, run.cfg.train
    run.model.train()
    order = batch_order(run.lengths, t.batch_size, t.seed, epoch, cfg.data.group_by_length)
    batches, dropped = distributed.shard(order, d, t.grad_accum_steps)
    if dropped and note_dropped:
        run.log.note(
            f"note: {dropped} micro-batch(es) per epoch left out: they do not fill a global batch of "
            f"{d.world} ranks x {t.grad_accum_steps} accumulation steps"
        )
    sums = RunningSums.start(run.device, progress, own=d.main)
    bar = tqdm(
        total=len(batches),
        initial=first,
        desc=f"epoch {epoch + 1}/{t.epochs}",
        leave=False,
        dynamic_ncols=True,
        disable=True if (run.quiet or not d.main) else None,
    )
    train_ds = run.data.splits["train"]
    run.tokens, run.since = 0, time.perf_counter()  # tokens per second leave out the evaluation between epochs
    for i, batch in enumerate(iter_batches(train_ds, batches[first:], run.pad_id, run.hooks), start=first):
        torch.manual_seed(batch_seed(t.seed, epoch, i, d.rank))
        group_start = (i // t.grad_accum_steps) * t.grad_accum_steps
        group_size = min(t.grad_accum_steps, len(batches) - group_start)
        last_of_group = i + 1 == group_start + group_size
        lr = lr_at(run.global_step, cfg, run.total_steps)
        for group in run.optimizer.param_groups:
            group["lr"] = lr

        if run.tracking:
            run.tokens += int(batch["attention_mask"].sum())
        loss = forward_backward(run, batch, i, group_size, last_of_group, sums)
        if loss is None:  # a non-finite loss, skipped (train.on_nonfinite: skip)
            skip_batch(run, epoch, i, sums)
            bar.update()
            continue
        if last_of_group:
            optimizer_step(run)
        sums.add(loss)
        bar.update()
        log_steps(run, epoch, i, loss, lr, sums, last_of_group)
        every = t.save_every_steps
        saved = last_of_group and every and run.global_step % every == 0 and i + 1 < len(batches)
        if saved:
            stop_if_nonfinite(run, sums, epoch)  # never checkpoint past a NaN
            save(run, epoch, {"progress": sums.saved(d), "softprompt_version": __version__}, micro_batch=i + 1)
        if last_of_group and (signum := run.stop.agreed(d, run.device)):
            preempt(run, epoch, i + 1, sums, signum, saved)
    bar.close()
    stop_if_nonfinite(run, sums, epoch)
    return sums


def forward_backward(run: Run, batch, i: int, group_size: int, last_of_group: bool, sums: RunningSums):
    """One micro-batch's loss, its gradient added to the prompt's; None if it is non-finite and to be skipped."""
    batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
    # Under torchrun, gradients are averaged over ranks only at the end of the accumulation group.
    ddp = isinstance(run.forward, DistributedDataParallel)
    sync = run.forward.no_sync() if (ddp and not last_of_group) else contextlib.nullcontext()
    with sync:
        with autocast(run.device, run.cfg.train.precision):
            loss = run.forward(**batch).loss
        finite = torch.isfinite(loss)
        if run.cfg.train.on_nonfinite is NonFinite.SKIP:
            # Skipping must be decided now, which costs one host sync per micro-batch.
            if not bool(distributed.all_min(finite.long(), run.d).item()):
                return None
        else:  # stopping can wait until the next log line (no sync now)
            bad = sums.first_bad
            sums.first_bad = torch.where((bad == 0) & ~finite, torch.full_like(bad, i + 1), bad)
        run.scaler.scale(loss / group_size).backward()
    if last_of_group and isinstance(run.model, FSDPModule):  # sharded (train.strategy fsdp): average it here
        fsdp.average_prompt_grad(run.model, run.d)
    return loss


def skip_batch(run: Run, epoch: int, i: int, sums: RunningSums) -> None:
    sums.skipped += 1
    run.log.note(
        f"warning: non-finite loss at epoch {epoch + 1}, step {i + 1}; batch skipped "
        f"({sums.skipped} this epoch; the gradients accumulated so far in this step are dropped too)"
    )
    run.optimizer.zero_grad(set_to_none=True)


def optimizer_step(run: Run) -> None:
    """Clip, step, zero the gradient; one more optimizer step."""
    if run.cfg.train.max_grad_norm is not None:
        run.scaler.unscale_(run.optimizer)
        norm = torch.nn.utils.clip_grad_norm_([run.model.prompt], run.cfg.train.max_grad_norm)
        run.grad_norm = norm.detach() if run.tracking else None
    elif run.tracking:  # only read: the unclipped gradient, unscaled (fp16)
        grad = run.model.prompt.grad
        run.grad_norm = torch.linalg.vector_norm(grad.float()) / (
            run.scaler.get_scale() if run.scaler.is_enabled() else 1
        )
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)  # free the gradient as soon as we can
    run.global_step += 1


def log_steps(run: Run, epoch: int, i: int, loss: torch.Tensor, lr: float, sums: RunningSums, stepped: bool) -> None:
    """Step lines as the reference prints them: micro-batch 0 of the epoch and every log_every-th after it,
    counted over all ranks' micro-batches in single-process order, each with that micro-batch's loss."""
    d, device = run.d, run.device
    ranks_now = distributed.round_indices(i, d, run.cfg.train.grad_accum_steps)
    due = [j for j in ranks_now if j % run.cfg.train.log_every == 0]
    if not due:  # every rank computes the same list, so all of them join the collectives below
        return
    stop_if_nonfinite(run, sums, epoch)
    mine = torch.zeros(d.world, device=device)
    mine[d.rank] = loss.detach().float()
    losses = distributed.all_sum(mine, d).tolist()
    _, window_sum, _, window_n = sums.totals(d)
    window = (window_sum / window_n).item()
    for j in due:
        step_loss = losses[ranks_now.index(j)]
        run.log.line(f"Epoch: {epoch} | Step: {j} | Loss: {step_loss:.6f}")
        run.log.record(
            {
                "type": "step",
                "epoch": epoch,
                "step": j,
                "global_step": run.global_step,
                "loss": step_loss,
                "window_loss": window,
                "lr": lr,
            }
        )
    if run.tracking:
        track_steps(run, [losses[ranks_now.index(j)] for j in due], window, lr, stepped)
    sums.window_sum.zero_()
    sums.window_n = 0


def track_steps(run: Run, step_losses: list[float], window: float, lr: float, stepped: bool) -> None:
    """The step lines' scalars for the tracker, at the optimizer step the micro-batch counts towards (the
    one just taken, or the one its accumulation group is building): on resume, every point after the
    checkpoint's step is written again, none before it."""
    tokens = distributed.all_sum(torch.tensor(run.tokens, device=run.device), run.d).item()
    now = time.perf_counter()
    scalars = {"train/loss_window": window, "train/lr": lr, "train/tokens_per_sec": tokens / max(now - run.since, 1e-9)}
    if run.grad_norm is not None:
        scalars["train/grad_norm"] = distributed.all_max(run.grad_norm, run.d).item()  # the same on every rank
    x = run.global_step if stepped else run.global_step + 1
    for step_loss in step_losses:
        run.tracker.log({"train/loss": step_loss, **scalars}, x)
    run.tokens, run.since = 0, now


def stop_if_nonfinite(run: Run, sums: RunningSums, epoch: int) -> None:
    bad_step = int(distributed.all_max(sums.first_bad, run.d).item())
    if bad_step > 0:
        raise SoftPromptError(
            f"the loss became NaN or infinite at micro-batch {bad_step} of epoch {epoch + 1}; the run stopped and "
            "its last checkpoint is kept. Lower train.lr, or set train.on_nonfinite: skip"
        )


def end_epoch(run: Run, epoch: int, sums: RunningSums) -> None:
    """Average train and validation loss of the epoch: lines, log record, and a checkpoint when one is due."""
    d, t = run.d, run.cfg.train
    epoch_sum, _, counted, _ = sums.totals(d)
    train_loss = (epoch_sum / counted).item() if counted else math.nan  # every batch skipped: NaN, not a misleading 0
    val_loss = mean_loss(run.model, run.data.splits["validation"], run.cfg, run.device, run.pad_id, d, run.hooks)
    run.log.line(f"Epoch: {epoch + 1} | Average train loss: {train_loss:.6f}")
    run.log.line(f"Epoch: {epoch + 1} | Average val loss: {val_loss:.6f}")
    run.log.record(
        {
            "type": "epoch",
            "epoch": epoch + 1,
            "global_step": run.global_step,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "skipped_batches": sums.skipped,
            "time": time.time(),
        }
    )
    run.tracker.log({"epoch/train_loss": train_loss, "epoch/val_loss": val_loss}, run.global_step)
    if (epoch + 1) % t.save_every == 0 or epoch + 1 == t.epochs:
        save(run, epoch + 1, {"train_loss": train_loss, "val_loss": val_loss, "softprompt_version": __version__})


def save(run: Run, epoch: int, extra: dict[str, Any], micro_batch: int = 0) -> None:
    """Rank 0 writes the checkpoint (epochs done, micro-batches into the next) and says so; the others wait."""
    if run.d.main:
        path = save_checkpoint(
            run.run_dir,
            epoch,
            run.global_step,
            run.model,
            run.optimizer,
            run.cfg.to_dict(),
            run.prompt_meta,
            extra=extra,
            micro_batch=micro_batch,
            scaler=run.scaler,
            hooks=run.hooks,
            world_size=run.d.world,
        )
        run.log.line(f"Saved checkpoint {path}")
    distributed.barrier(run.d)


def preempt(run: Run, epoch: int, done: int, sums: RunningSums, signum: int, saved: bool) -> None:
    """SIGTERM/SIGUSR1: checkpoint `done` micro-batches into the epoch (unless that was just done), say so, and
    raise Preempted. Called by every rank at the same step."""
    stop_if_nonfinite(run, sums, epoch)  # never checkpoint past a NaN
    if not saved:
        save(run, epoch, {"progress": sums.saved(run.d), "softprompt_version": __version__}, micro_batch=done)
    ckpt = checkpoint_dir(run.run_dir, epoch, done)
    message = (
        f"stopped on {signal.Signals(signum).name} after step {run.global_step} ({done} micro-batches into epoch "
        f"{epoch + 1}); saved {ckpt}: continue with --resume (exit status {EXIT_PREEMPTED})"
    )
    run.log.note(message)
    raise Preempted(message)
