"""Fault-injection hooks for the tests, read from the environment once per training run.

    SOFTPROMPT_TEST_CRASH=checkpoint-pause python scripts/train.py --config tests/configs/smoke/qna.yaml

Production code calls `testing.point("checkpoint")` where a test may make it fail, and passes each built
batch through `testing.batch_built(batch)`; with the variables unset both do nothing. `train()` runs inside
`with testing.armed():`, which reads the variables once and starts the counts at zero in a context variable,
so two runs in one process (the tests, threads too) never see each other's counts, and no production
signature carries a hook.

SOFTPROMPT_TEST_CRASH=<point>[@N]
    exit with status 137, as `kill -9` would, the N-th time (default: the first; `*`: every time) the run
    reaches <point>;
    <point>-pause[@N] prints "test hook: paused at <point>" to stderr and waits to be killed;
    <point>-slow[@N] prints "test hook: slow at <point>" and sleeps a few seconds, then goes on
    (time for a test to send a second signal). Points: `eval` (evaluation started), `checkpoint` (tensor
    files written, metadata not yet), `latest` (checkpoint renamed, the `latest` marker not yet moved).
SOFTPROMPT_TEST_NAN_BATCH=N
    the N-th batch the run builds (training and evaluation alike, counted from 1) gets no labelled token,
    so its loss is NaN (a mean over nothing).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

CRASH_ENV = "SOFTPROMPT_TEST_CRASH"
NAN_ENV = "SOFTPROMPT_TEST_NAN_BATCH"
SLOW_SECONDS = 2.0


@dataclass
class Hooks:
    crash: str = ""
    """The SOFTPROMPT_TEST_CRASH spec ('' : none)."""
    nan_batch: int = 0
    """The SOFTPROMPT_TEST_NAN_BATCH number (0: none)."""
    reached: Counter = field(default_factory=Counter)
    built: int = 0

    @classmethod
    def from_env(cls) -> Hooks:
        return cls(crash=os.environ.get(CRASH_ENV, ""), nan_batch=int(os.environ.get(NAN_ENV) or 0))

    def crash_point(self, name: str) -> None:
        """Die (or pause, or dawdle) here when SOFTPROMPT_TEST_CRASH asks for it."""
        if not self.crash:
            return
        point, _, nth = self.crash.partition("@")
        base, _, mode = point.partition("-")
        if base != name:
            return
        self.reached[name] += 1
        if nth != "*" and self.reached[name] != int(nth or 1):
            return
        if mode == "slow":
            print(f"test hook: slow at {name}", file=sys.stderr, flush=True)
            time.sleep(SLOW_SECONDS)
            return
        if mode == "pause":
            print(f"test hook: paused at {name}", file=sys.stderr, flush=True)
            time.sleep(600)
        os._exit(137)

    def batch_built(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Count a built batch; the SOFTPROMPT_TEST_NAN_BATCH-th loses its labels."""
        if not self.nan_batch:
            return batch
        self.built += 1
        if self.built == self.nan_batch:
            batch["labels"].fill_(-100)
        return batch


_CURRENT: ContextVar[Hooks | None] = ContextVar("softprompt_test_hooks", default=None)
"""The running training run's hooks; None outside `armed()`."""
_IDLE = Hooks()
"""What runs outside `armed()` ask: no crash, no NaN (it never counts, so it stays as it is)."""


@contextlib.contextmanager
def armed() -> Iterator[Hooks]:
    """One run's hooks, read from the environment now, counts from zero; the previous ones back afterwards."""
    token = _CURRENT.set(Hooks.from_env())
    try:
        yield _CURRENT.get()
    finally:
        _CURRENT.reset(token)


def point(name: str) -> None:
    """A place where SOFTPROMPT_TEST_CRASH may kill (pause, slow) the run: `eval`, `checkpoint`, `latest`."""
    (_CURRENT.get() or _IDLE).crash_point(name)


def batch_built(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Count a batch the run built; the SOFTPROMPT_TEST_NAN_BATCH-th comes back with no labelled token."""
    return (_CURRENT.get() or _IDLE).batch_built(batch)
