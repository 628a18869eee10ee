"""Experiment tracking: training's scalars (and, later, evaluation's metrics) in an external tool's format.

    train.tracker: tensorboard      # then: tensorboard --logdir results/<run>/tensorboard

`open_tracker` gives an object with `log(scalars, step)` and `close()`; `train.tracker: none` (the
default) gives one that does nothing. TensorBoard is the one tool supported; another is a class with the
same two methods and a line in `open_tracker`. The x axis is the optimizer step (the `global_step` of
log.jsonl). Every run opens the writer with `purge_step` one past the step it starts from (1 for a fresh run):
TensorBoard's reader then drops the points an interrupted (or overwritten) run wrote after that step, and
this run writes them again, so no point is missing or doubled. Step lines are plotted at the optimizer
step their micro-batch counts towards, so every point after a checkpoint lies past its step.

Evaluation adds its metrics to the same run with `add_scalars(results_dir / run_name, metrics, step)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from .config import Tracker as TrackerName
from .errors import SoftPromptError

TENSORBOARD_DIR = "tensorboard"
INSTALL = "pip install 'softprompt[tensorboard]'"


class Tracker(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class NoTracker:
    """train.tracker: none."""

    def log(self, scalars: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoard:
    """Scalars into <results>/<run>/tensorboard/ (event files TensorBoard reads)."""

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        writer_class = summary_writer()
        try:
            self.writer = writer_class(log_dir=str(log_dir), purge_step=purge_step)
        except OSError as err:
            raise SoftPromptError(f"cannot write TensorBoard events to {log_dir} ({err.strerror})") from err

    def log(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()


def summary_writer():
    """torch's SummaryWriter class, or one line naming the package to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # torch.utils.tensorboard imports the tensorboard package
        raise SoftPromptError(
            f"train.tracker is 'tensorboard' but the tensorboard package is not installed; install it with: {INSTALL}"
        ) from err
    return SummaryWriter


def open_tracker(name: TrackerName, run_results: Path | None, after_step: int = 0) -> Tracker:
    """The tracker `train.tracker` names, writing under run_results (None: no results folder, no tracking).

    after_step: the optimizer step the run starts after (0 for a fresh run, the checkpoint's on --resume);
    points an earlier run wrote beyond it are dropped, as the run writes them again.
    """
    if name is TrackerName.NONE or run_results is None:
        return NoTracker()
    return TensorBoard(run_results / TENSORBOARD_DIR, purge_step=after_step + 1)


def add_scalars(run_results: str | Path, scalars: dict[str, float], step: int) -> Path:
    """Add scalars (e.g. evaluation's metrics, as `eval/<split>/<metric>`) at `step` to a run's TensorBoard
    folder, <results>/<run>/tensorboard/; returns that folder. Needs the tensorboard package."""
    log_dir = Path(run_results) / TENSORBOARD_DIR
    tracker = TensorBoard(log_dir)
    try:
        tracker.log(scalars, step)
    finally:
        tracker.close()
    return log_dir
