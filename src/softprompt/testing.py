"""Fault-injection hooks for the tests, read from the environment once per training run.

    SOFTPROMPT_TEST_CRASH=checkpoint-pause python scripts/train.py --config tests/configs/smoke/qna.yaml

Production code asks a `Hooks` object (built by `Hooks.from_env()` at the start of a run and passed down)
whether to fail here; with the variables unset every hook is a no-op. Counters live in that object, not
in module globals, so two runs in one process (the tests) never see each other's counts.

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

import os
import sys
import time
from collections import Counter
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
        self.built += 1
        if self.built == self.nan_batch:
            batch["labels"].fill_(-100)
        return batch
