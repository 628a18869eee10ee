"""Preemption: SIGTERM or SIGUSR1 stops training at the end of the optimizer step in progress, checkpointed.

    kill -USR1 <pid>   # -> "stopped on SIGUSR1 after step 8 (2 micro-batches into epoch 2); saved …", exit 75

`StopRequest` notes the signal while training runs; at the end of each optimizer step the loop asks
`agreed` (a collective under torchrun, so every rank stops at the same step), writes a mid-epoch
checkpoint there and calls `stop_here`, which says so and raises `Preempted`; scripts/train.py then exits
with EXIT_PREEMPTED. SLURM sends SIGUSR1 with --signal, and SIGTERM at the time limit.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch

from . import distributed

EXIT_PREEMPTED = 75
"""scripts/train.py's exit status after SIGTERM or SIGUSR1 (BSD's EX_TEMPFAIL: try again, with --resume)."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # SLURM sends SIGUSR1 with --signal, and SIGTERM at the time limit


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


def stop_here(signum: int, ckpt: Path, global_step: int, epoch: int, micro_batches: int, note) -> None:
    """Say where the run stopped (`micro_batches` into 0-based `epoch`, checkpointed as `ckpt`) and raise Preempted."""
    message = (
        f"stopped on {signal.Signals(signum).name} after step {global_step} ({micro_batches} micro-batches into "
        f"epoch {epoch + 1}); saved {ckpt}: continue with --resume (exit status {EXIT_PREEMPTED})"
    )
    note(message)
    raise Preempted(message)
