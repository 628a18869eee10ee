"""A training run's output, in one place: the reference's lines, log.jsonl, TensorBoard, tokens per second.

    Epoch: 0 | Step: 0 | Loss: 2.903741                 stdout, the reference's format ("Step" counts micro-batches)
    {"type": "step", "epoch": 0, "step": 0, "global_step": 0, "loss": ..., "window_loss": ..., "lr": ...}
    {"type": "epoch", "epoch": 1, "global_step": 6, "train_loss": ..., "val_loss": ..., ...}   <run>/log.jsonl

`RunLog` is the run's one channel: `line` to stdout (through `echo`), `note` to stderr, `record` to
<run>/log.jsonl, scalars to the tracker (`train.tracker`). Only rank 0 talks; the other ranks' RunLog stays
silent. It is handed plain numbers: the reductions over ranks happen in the training loop, never here.
`RunningSums` holds the epoch's loss sums on the device (a host sync only when a line is printed), and
`read_log` reads log.jsonl back (for plots and reports).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import tracking
from .config import Tracker as TrackerName
from .errors import SoftPromptError

LOG_FILE = "log.jsonl"


@dataclass
class Throughput:
    """For the tracker: tokens (this rank's, padding excluded) since the last step line, the perf_counter()
    of that line, and the last optimizer step's gradient norm before clipping (a device tensor, or None)."""

    tokens: int = 0
    since: float = 0.0
    grad_norm: torch.Tensor | None = None

    def restart(self) -> None:
        self.tokens, self.since = 0, time.perf_counter()


class RunLog:
    """The run's one output channel; on ranks other than 0 it stays silent.

    `line`: the reference's lines (steps, epochs, checkpoints) to stdout, through `echo`;
    `note`: notes and warnings to stderr; `record`: one JSON record appended to <run>/log.jsonl.
    `tracking`: train.tracker is set (and there is a results folder): every rank then counts tokens.
    """

    def __init__(self, main: bool, echo: Callable[[str], None], log_path: Path, tracked: bool = False):
        self.main, self.echo, self.log_path, self.tracking = main, echo, log_path, tracked
        self.tracker: tracking.Tracker = tracking.NoTracker()
        self.speed = Throughput()

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

    def open_tracker(self, name: TrackerName, run_results: Path | None, after_step: int) -> None:
        """Rank 0's tracker (see tracking.open_tracker); the others keep one that does nothing."""
        if self.main:
            self.tracker = tracking.open_tracker(name, run_results, after_step=after_step)

    def close(self) -> None:
        self.tracker.close()

    def steps(self, epoch: int, due: dict[int, float], window: float, global_step: int, lr: float) -> None:
        """The step lines of `due` ({micro-batch of the epoch: its loss}), at `global_step` optimizer steps."""
        for micro_batch, loss in due.items():
            self.line(f"Epoch: {epoch} | Step: {micro_batch} | Loss: {loss:.6f}")
            self.record(
                {
                    "type": "step",
                    "epoch": epoch,
                    "step": micro_batch,
                    "global_step": global_step,
                    "loss": loss,
                    "window_loss": window,
                    "lr": lr,
                }
            )

    def track_steps(self, losses: list[float], window: float, lr: float, tokens: int, grad_norm, x: int) -> None:
        """The step lines' scalars for the tracker at optimizer step x (the one the micro-batch counts towards:
        on resume, every point after the checkpoint's step is written again, none before it). `tokens`: all
        ranks' since the last line; `grad_norm`: a float, or None when no step was taken yet."""
        now = time.perf_counter()
        per_sec = tokens / max(now - self.speed.since, 1e-9)
        scalars = {"train/loss_window": window, "train/lr": lr, "train/tokens_per_sec": per_sec}
        if grad_norm is not None:
            scalars["train/grad_norm"] = grad_norm
        for loss in losses:
            self.tracker.log({"train/loss": loss, **scalars}, x)
        self.speed.tokens, self.speed.since = 0, now

    def epoch(self, epoch: int, global_step: int, train_loss: float, val_loss: float, skipped: int) -> None:
        """The epoch's average lines, its log.jsonl record and tracker scalars (`epoch`: 1-based, the one closed)."""
        self.line(f"Epoch: {epoch} | Average train loss: {train_loss:.6f}")
        self.line(f"Epoch: {epoch} | Average val loss: {val_loss:.6f}")
        self.record(
            {
                "type": "epoch",
                "epoch": epoch,
                "global_step": global_step,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "skipped_batches": skipped,
                "time": time.time(),
            }
        )
        self.tracker.log({"epoch/train_loss": train_loss, "epoch/val_loss": val_loss}, global_step)


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

    def local(self) -> torch.Tensor:
        """This rank's [epoch_sum, window_sum, counted, window_n] (fp32, exact for counts below 2**24), the
        tensor the loop adds up over ranks."""
        counts = self.epoch_sum.new_tensor([self.counted, self.window_n])
        return torch.cat([self.epoch_sum.view(1), self.window_sum.view(1), counts])

    def saved(self, totals: torch.Tensor) -> dict[str, Any]:
        """What a mid-epoch checkpoint keeps: `totals`, the ranks' `local()` added up, and the skipped count."""
        epoch_sum, window_sum, counted, window_n = totals.tolist()
        return {
            "epoch_sum": epoch_sum,
            "window_sum": window_sum,
            "counted": round(counted),
            "window_n": round(window_n),
            "skipped": self.skipped,
        }

    def new_window(self) -> None:
        self.window_sum.zero_()
        self.window_n = 0


def read_log(run_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """(step records, epoch records) of a run's log.jsonl, in file order."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        raise SoftPromptError(f"{path} not found: is {run_dir} a run directory (checkpoints/<run>)?")
    steps, epochs = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise SoftPromptError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from err
        if record.get("type") == "step":
            steps.append(record)
        elif record.get("type") == "epoch":
            epochs.append(record)
    if not steps and not epochs:
        raise SoftPromptError(f"{path} holds no loss records yet")
    return steps, epochs
