"""Train a soft prompt on a frozen causal LM: one AdamW loop, read top to bottom.

    python scripts/train.py --config configs/smoke/sum.yaml

`train` sets up (run folder, model, data, optimizer; `restore` on --resume), then per epoch `run_epoch` goes
through the epoch's seeded batch order. Per micro-batch: learning rate, forward/backward; at the end of each
accumulation group: clip, step (one optimizer step); step lines every `log_every` micro-batches; with
`save_every_steps`, a mid-epoch checkpoint every that many optimizer steps (from which --resume continues
exactly). At the end of the epoch `end_epoch` averages the train and validation loss and checkpoints every
`save_every` epochs and after the last. SIGTERM or SIGUSR1 stops the run at the end of the optimizer step in
progress, with a checkpoint there (preemption.py; the script exits 75). The reductions over ranks happen
here, in the loop; runlog.py only prints and writes what it is handed. Under torchrun, setup wraps the model
in DistributedDataParallel, or with `train.strategy: fsdp` shards its base (fsdp.py).

Counting: a "micro-batch" is one forward/backward (the log's "Step", 0-based in its epoch); an "optimizer
step" is one AdamW update, every grad_accum_steps micro-batches (`global_step`, `save_every_steps`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import __version__, distributed, fsdp, testing, tracking
from .checkpoint import checkpoint_dir, save_checkpoint
from .config import Config, NonFinite, Precision, Schedule, Strategy, Tracker, TrainConfig
from .data import batch_order, build_batch, iter_batches, lengths_of, load_task_data
from .devices import autocast, pick_device
from .errors import SoftPromptError
from .hub import context_window
from .methods import build_for_training
from .model import SoftPromptModel
from .plots import plot_losses
from .preemption import StopRequest, stop_here
from .resume import Start, batch_seed, earlier_run, prepare_run_dir, restore, write_config
from .runlog import LOG_FILE, RunLog, RunningSums
from .surgery import enable_checkpointing


@dataclass(frozen=True)
class Context:
    """Where the run runs, fixed once set up: its config, processes, device, folder and output channel."""

    cfg: Config
    d: distributed.Dist
    device: torch.device
    run_dir: Path
    log: RunLog
    quiet: bool


@dataclass
class Trained:
    """What is trained: the model (its prompt the one trainable tensor), the optimizer and (fp16) loss scaler."""

    model: SoftPromptModel
    forward: torch.nn.Module
    """The model (sharded in place with train.strategy fsdp), or under torchrun with ddp its
    DistributedDataParallel wrapper (which averages the gradient)."""
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


@dataclass(frozen=True)
class TrainData:
    """What the run reads: the tokenised splits, each training example's length (what group_by_length
    sorts by) and the padding id."""

    splits: dict[str, Any]
    lengths: list[int]
    pad_id: int


@dataclass
class Position:
    """How far the run is: `global_step` optimizer steps taken, of `total_steps` (what the schedule spans)."""

    global_step: int
    total_steps: int


def lr_at(step: int, cfg: Config, total_steps: int) -> float:
    """The learning rate for optimizer step `step` (0-based): constant, or linear warmup then linear decay."""
    t = cfg.train
    if t.schedule is Schedule.CONSTANT:
        return t.lr
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    return t.lr * max(0.0, (total_steps - step) / max(1, total_steps - t.warmup_steps))


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
    tracked = cfg.train.tracker is not Tracker.NONE and run_results is not None
    log = RunLog(d.main, echo, cfg.run_dir / LOG_FILE, tracked=tracked)
    try:
        with testing.armed():  # the fault-injection hooks' counts are this run's (no-ops unless a test sets them)
            ctx, trained, data, total_steps = setup(cfg, d, device_name, resume, overwrite, log, quiet)
            start = restore(cfg, d, ctx.device, ctx.run_dir, trained, log) if resume else Start()
            pos = Position(start.global_step, total_steps)
            if d.main:
                write_config(cfg, ctx.run_dir)
            log.open_tracker(cfg.train.tracker, run_results, after_step=pos.global_step)
            with StopRequest() as stop:
                for epoch in range(start.epoch, cfg.train.epochs):
                    first = start.micro_batch if epoch == start.epoch else 0  # a mid-epoch checkpoint resumes here
                    progress = start.progress if first else {}
                    sums = run_epoch(ctx, trained, data, pos, stop, epoch, first, progress, epoch == start.epoch)
                    end_epoch(ctx, trained, data, pos, epoch, sums)
    finally:
        log.close()
        distributed.shutdown(d)
    if d.main and results_dir is not None:
        log.line(f"Loss curves: {plot_losses(ctx.run_dir, Path(results_dir) / cfg.run_name / 'loss.png')}")
    return ctx.run_dir


def run_epoch(
    ctx: Context,
    trained: Trained,
    data: TrainData,
    pos: Position,
    stop: StopRequest,
    epoch: int,
    first: int,
    progress: dict[str, Any],
    note_dropped: bool,
) -> RunningSums:
    """Train one epoch from micro-batch `first` (0, or where a mid-epoch checkpoint stopped); returns its sums."""
    cfg, d, t, log = ctx.cfg, ctx.d, ctx.cfg.train, ctx.log
    trained.model.train()
    order = batch_order(data.lengths, t.batch_size, t.seed, epoch, cfg.data.group_by_length)
    batches, dropped = distributed.split_batches(order, d, t.grad_accum_steps)
    if dropped and note_dropped:
        log.note(
            f"note: {dropped} micro-batch(es) per epoch left out: they do not fill a global batch of "
            f"{d.world} ranks x {t.grad_accum_steps} accumulation steps"
        )
    sums = RunningSums.start(ctx.device, progress, own=d.main)
    bar = progress_bar(ctx, len(batches), first, f"epoch {epoch + 1}/{t.epochs}")
    log.speed.restart()  # tokens per second leave out the evaluation between epochs
    for micro_batch, batch in enumerate(iter_batches(data.splits["train"], batches[first:], data.pad_id), first):
        torch.manual_seed(batch_seed(t.seed, epoch, micro_batch, d.rank))
        group_start = (micro_batch // t.grad_accum_steps) * t.grad_accum_steps
        group_size = min(t.grad_accum_steps, len(batches) - group_start)
        last_of_group = micro_batch + 1 == group_start + group_size  # an optimizer step follows it
        lr = lr_at(pos.global_step, cfg, pos.total_steps)
        for group in trained.optimizer.param_groups:
            group["lr"] = lr

        if log.tracking:
            log.speed.tokens += int(batch["attention_mask"].sum())
        loss = forward_backward(ctx, trained, batch, micro_batch, group_size, last_of_group, sums)
        if loss is None:  # a non-finite loss, skipped (train.on_nonfinite: skip)
            skip_batch(ctx, trained, epoch, micro_batch, sums)
            bar.update()
            continue
        if last_of_group:
            log.speed.grad_norm = optimizer_step(trained, pos, t, log.tracking)
        sums.add(loss)
        bar.update()
        log_steps(ctx, pos, epoch, micro_batch, loss, lr, sums, last_of_group)

        every = t.save_every_steps  # counted in optimizer steps
        saved = last_of_group and every and pos.global_step % every == 0 and micro_batch + 1 < len(batches)
        if saved:
            save_mid_epoch(ctx, trained, pos, epoch, micro_batch + 1, sums)
        if last_of_group and (signum := stop.agreed(d, ctx.device)):
            if not saved:
                save_mid_epoch(ctx, trained, pos, epoch, micro_batch + 1, sums)
            ckpt = checkpoint_dir(ctx.run_dir, epoch, micro_batch + 1)
            stop_here(signum, ckpt, pos.global_step, epoch, micro_batch + 1, log.note)  # raises Preempted
    bar.close()
    raise_if_nonfinite(ctx, sums, epoch)
    return sums


def forward_backward(ctx: Context, trained: Trained, batch, micro_batch: int, group_size: int, last: bool, sums):
    """One micro-batch's loss, its gradient added to the prompt's; None if it is non-finite and to be skipped.
    `last`: the last micro-batch of its accumulation group."""
    batch = {k: v.to(ctx.device, non_blocking=True) for k, v in batch.items()}
    # Under torchrun, gradients are averaged over ranks only at the end of the accumulation group.
    ddp = isinstance(trained.forward, DistributedDataParallel)
    sync = trained.forward.no_sync() if (ddp and not last) else contextlib.nullcontext()
    with sync:
        with autocast(ctx.device, ctx.cfg.train.precision):
            loss = trained.forward(**batch).loss
        finite = torch.isfinite(loss)
        if ctx.cfg.train.on_nonfinite is NonFinite.SKIP:
            # Skipping must be decided now, which costs one host sync per micro-batch.
            if not bool(distributed.all_min(finite.long(), ctx.d).item()):
                return None
        else:  # stopping can wait until the next log line (no sync now)
            bad = sums.first_bad
            sums.first_bad = torch.where((bad == 0) & ~finite, torch.full_like(bad, micro_batch + 1), bad)
        trained.scaler.scale(loss / group_size).backward()
    if last and isinstance(trained.model, FSDPModule):  # sharded (train.strategy fsdp): average it here
        fsdp.average_prompt_grad(trained.model, ctx.d)
    return loss


def optimizer_step(trained: Trained, pos: Position, t: TrainConfig, track: bool) -> torch.Tensor | None:
    """Clip, step, zero the gradient: one more optimizer step. Returns the gradient norm before clipping
    when `track` (for the tracker), else None."""
    model, scaler, norm = trained.model, trained.scaler, None
    if t.max_grad_norm is not None:
        scaler.unscale_(trained.optimizer)
        clipped = torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), t.max_grad_norm)
        norm = clipped.detach() if track else None
    elif track:  # only read: the unclipped gradient, unscaled (fp16)
        grads = torch.cat([p.grad.float().flatten() for p in model.trainable_parameters()])
        norm = torch.linalg.vector_norm(grads) / (scaler.get_scale() if scaler.is_enabled() else 1)
    scaler.step(trained.optimizer)
    scaler.update()
    trained.optimizer.zero_grad(set_to_none=True)  # free the gradient as soon as we can
    pos.global_step += 1
    return norm


def log_steps(ctx: Context, pos: Position, epoch: int, micro_batch: int, loss, lr: float, sums, stepped: bool):
    """The step lines due at this rank's `micro_batch`: micro-batch 0 of the epoch and every log_every-th after
    it, counted over all ranks' micro-batches in single-process order, each with that micro-batch's loss.
    Here the numbers are added up over ranks (collectives every rank joins); the log gets plain numbers."""
    d, device, log = ctx.d, ctx.device, ctx.log
    ranks_now = distributed.round_indices(micro_batch, d, ctx.cfg.train.grad_accum_steps)
    due = [j for j in ranks_now if j % ctx.cfg.train.log_every == 0]
    if not due:  # every rank computes the same list, so all of them join the collectives below
        return
    raise_if_nonfinite(ctx, sums, epoch)
    mine = torch.zeros(d.world, device=device)
    mine[d.rank] = loss.detach().float()
    losses = distributed.all_sum(mine, d).tolist()
    totals = distributed.all_sum(sums.local(), d)
    window = (totals[1] / totals[3]).item()
    step_losses = {j: losses[ranks_now.index(j)] for j in due}
    log.steps(epoch, step_losses, window, pos.global_step, lr)
    if log.tracking:
        tokens = distributed.all_sum(torch.tensor(log.speed.tokens, device=device), d).item()
        norm = log.speed.grad_norm
        norm = distributed.all_max(norm, d).item() if norm is not None else None  # the same on every rank
        x = pos.global_step if stepped else pos.global_step + 1  # the optimizer step the micro-batch counts towards
        log.track_steps(list(step_losses.values()), window, lr, tokens, norm, x)
    sums.new_window()


def end_epoch(ctx: Context, trained: Trained, data: TrainData, pos: Position, epoch: int, sums: RunningSums) -> None:
    """Average train and validation loss of the epoch: lines, log record, and a checkpoint when one is due."""
    totals = distributed.all_sum(sums.local(), ctx.d)
    epoch_sum, counted = totals[0], totals[2]
    train_loss = (epoch_sum / counted).item() if counted else math.nan  # every batch skipped: NaN, not a misleading 0
    val_loss = mean_loss(trained.model, data.splits["validation"], ctx.cfg, ctx.device, data.pad_id, ctx.d)
    ctx.log.epoch(epoch + 1, pos.global_step, train_loss, val_loss, sums.skipped)
    t = ctx.cfg.train
    if (epoch + 1) % t.save_every == 0 or epoch + 1 == t.epochs:
        extra = {"train_loss": train_loss, "val_loss": val_loss, "softprompt_version": __version__}
        save(ctx, trained, pos, epoch + 1, extra)


@torch.no_grad()
def mean_loss(model: SoftPromptModel, ds, cfg: Config, device, pad_id: int, d: distributed.Dist | None = None) -> float:
    """Mean of batch losses over a split in a fixed order (the reference's 'Average val loss').

    Under torchrun each rank scores every world-th batch and the sums are added up.
    """
    d = d or distributed.Dist()  # a single process
    was_training = model.training
    model.eval()
    testing.point("eval")
    order = list(range(len(ds)))
    batches = [order[i : i + cfg.train.eval_batch_size] for i in range(0, len(order), cfg.train.eval_batch_size)]
    mine = batches[d.rank :: d.world]
    # A sharded model's forward is a collective: a rank with one batch fewer runs one more, not counted.
    filler = batches[:1] * (-(-len(batches) // d.world) - len(mine)) if isinstance(model, FSDPModule) else []
    total = torch.zeros((), device=device)
    built = itertools.chain(iter_batches(ds, mine, pad_id), (build_batch(ds, idx, pad_id) for idx in filler))
    for n, batch in enumerate(built):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, cfg.train.precision):
            loss = model(**batch).loss.float()
        if n < len(mine):
            total += loss
    model.train(was_training)
    return (distributed.all_sum(total, d) / max(1, len(batches))).item()


def raise_if_nonfinite(ctx: Context, sums: RunningSums, epoch: int) -> None:
    """Stop (SoftPromptError) if any rank saw a NaN/inf loss this epoch (a collective: all ranks call it)."""
    bad = int(distributed.all_max(sums.first_bad, ctx.d).item())
    if bad > 0:
        raise SoftPromptError(
            f"the loss became NaN or infinite at micro-batch {bad} of epoch {epoch + 1}; the run stopped and "
            "its last checkpoint is kept. Lower train.lr, or set train.on_nonfinite: skip"
        )


def skip_batch(ctx: Context, trained: Trained, epoch: int, micro_batch: int, sums: RunningSums) -> None:
    sums.skipped += 1
    ctx.log.note(
        f"warning: non-finite loss at epoch {epoch + 1}, step {micro_batch + 1}; batch skipped "
        f"({sums.skipped} this epoch; the gradients accumulated so far in this step are dropped too)"
    )
    trained.optimizer.zero_grad(set_to_none=True)


def save_mid_epoch(ctx: Context, trained: Trained, pos: Position, epoch: int, micro_batches: int, sums) -> None:
    """A checkpoint `micro_batches` (this rank's) into 0-based `epoch`, with the epoch's running sums; never
    past a NaN. A collective: all ranks call it."""
    raise_if_nonfinite(ctx, sums, epoch)
    progress = sums.saved(distributed.all_sum(sums.local(), ctx.d))
    save(ctx, trained, pos, epoch, {"progress": progress, "softprompt_version": __version__}, micro_batches)


def save(ctx: Context, trained: Trained, pos: Position, epoch: int, extra: dict[str, Any], micro_batch: int = 0):
    """Rank 0 writes the checkpoint (epochs done, micro-batches into the next) and says so; the others wait."""
    if ctx.d.main:
        m = ctx.cfg.model
        prompt_meta = {
            "task": ctx.cfg.task.name,
            "init": m.init.value,
            "init_text": m.init_text,
            "softprompt_version": __version__,
        }
        path = save_checkpoint(
            ctx.run_dir,
            epoch,
            pos.global_step,
            trained.model,
            trained.optimizer,
            ctx.cfg.to_dict(),
            prompt_meta,
            extra=extra,
            micro_batch=micro_batch,
            scaler=trained.scaler,
            world_size=ctx.d.world,
        )
        ctx.log.line(f"Saved checkpoint {path}")
    distributed.barrier(ctx.d)


def progress_bar(ctx: Context, total: int, initial: int, desc: str):
    """tqdm over the epoch's micro-batches, on rank 0 and unless --quiet."""
    disable = True if (ctx.quiet or not ctx.d.main) else None
    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True, disable=disable)


def setup(cfg: Config, d, device_name: str, resume: bool, overwrite: bool, log: RunLog, quiet: bool):
    """Run folder, device, model, data, optimizer; rank 0 first (it fills the caches the others read).
    Returns (Context, Trained, TrainData, optimizer steps the run spans)."""
    with distributed.rank0_first(d):
        run_dir = prepare_run_dir(cfg, resume, overwrite) if d.main else cfg.run_dir
        device = pick_device(device_name, cfg.model.dtype)
        if device.type == "cpu":
            # Multi-threaded CPU kernels otherwise sum in a varying order: two runs on 2 threads drifted apart by
            # 9e-6 in 16 steps, and resume could not be bit-identical. (CUDA would also need CUBLAS_WORKSPACE_CONFIG.)
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.train.seed)
        model, tokenizer = build_for_training(cfg.model, cfg.prompt, seed=cfg.train.seed)
        data = load_task_data(cfg, tokenizer, context_window(model.base))
    if overwrite and not resume and d.main:  # only now that config, model and data have loaded without error
        for p in earlier_run(run_dir):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for split in data.splits:
        if data.truncated_sources[split] or data.truncated_targets[split]:
            log.note(
                f"note: {split}: {data.truncated_sources[split]} source(s) cut to {data.source_budget} tokens, "
                f"{data.truncated_targets[split]} target(s) cut to {cfg.data.max_target_tokens} tokens"
            )
    t = cfg.train
    forward = place(model, cfg, d, device, log)
    optimizer = torch.optim.AdamW(
        model.trainable_parameters(), lr=t.lr, betas=t.betas, eps=t.eps, weight_decay=t.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision is Precision.FP16)
    micro_batches = math.ceil(len(data.splits["train"]) / t.batch_size)
    accum = t.grad_accum_steps
    steps_per_epoch = math.ceil(micro_batches / accum) if not d.enabled else micro_batches // (accum * d.world)
    ctx = Context(cfg, d, device, run_dir, log, quiet)
    train_data = TrainData(data.splits, lengths_of(data.splits["train"]), tokenizer.pad_token_id)
    return ctx, Trained(model, forward, optimizer, scaler), train_data, steps_per_epoch * t.epochs


def place(model: SoftPromptModel, cfg: Config, d, device: torch.device, log: RunLog) -> torch.nn.Module:
    """Put the model on the device: whole, or under torchrun wrapped in DDP or (fsdp) its base sharded in
    place; with gradient checkpointing if asked. Returns the module the loop calls."""
    sharded = d.enabled and cfg.train.strategy is Strategy.FSDP
    if not sharded:  # fully_shard moves the base to the device unit by unit
        model.to(device)
    if cfg.train.gradient_checkpointing:
        enable_checkpointing(model.base)
    if sharded:  # in place; forward_backward averages the prompt's gradient
        held = fsdp.shard(model, d, device)
        log.note(
            f"note: train.strategy fsdp: the base's {sum(held):,} parameters sharded over {d.world} ranks "
            f"(each holds {', '.join(f'{n:,}' for n in held)})"
        )
    elif d.enabled:  # averages the prompt's gradient over ranks in backward
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model
