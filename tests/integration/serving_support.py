"""Starting and stopping the real server for the serving tests: scripts/serve.py in a subprocess on a free
localhost port, the session's smoke prompts, bounded waits."""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.serve_bench import ServerProcess
from conftest import smoke_config
from softprompt.config import load_config
from softprompt.data import load_raw
from softprompt.generate import Generator, source_fields, source_record

TASKS = ("qna", "sum", "tx")


def prompt_dirs(smoke_overrides) -> dict[str, Path]:
    """{task: run folder} of the session's smoke trainings (conftest.smoke_overrides)."""
    out = next(s.split("=", 1)[1] for s in smoke_overrides if s.startswith("train.output_dir="))
    return {t: Path(out) / load_config(smoke_config(t)).run_name for t in TASKS}


class Server(ServerProcess):
    """scripts/serve.py in a subprocess (benchmarks.serve_bench.ServerProcess), one torch thread, its log in the
    session's temporary folder."""

    def __init__(self, prompts: dict[str, Path], *flags: str, env: dict | None = None, timeout: float = 240):
        log = Path(os.environ["SOFTPROMPT_CACHE"]).parent / f"serve-{time.monotonic_ns()}.log"
        super().__init__(prompts, *flags, env={"OMP_NUM_THREADS": "1", **(env or {})}, log=log, timeout=timeout)


def sample_inputs(smoke_overrides, per_task: int = 4, chars: int = 400) -> list[tuple[str, dict]]:
    """(task, record) pairs: the first records of each task's evaluation split, with only its source fields and
    the body cut to `chars` characters (the sample articles are longer than tiny-gpt2's 256-token window, which
    the server refuses; the test's point is the answers, not the cut)."""
    out = []
    for t in TASKS:
        cfg = load_config(smoke_config(t), smoke_overrides)
        split = cfg.data.eval_split or cfg.task.eval_split
        body = source_fields(cfg.task)[1]
        for r in list(load_raw(cfg, (split,), cap_eval=False)[split])[:per_task]:
            record = source_record(cfg.task, r)
            *parents, last = body.split(".")
            node = record
            for part in parents:
                node = node[part]
            node[last] = node[last][:chars]
            out.append((t, record))
    return out


def expected_outputs(smoke_overrides, inputs: list[tuple[str, dict]]) -> list[str]:
    """generate.py's prediction for each input alone (greedy), from the same checkpoints."""
    gens = {t: Generator.load(load_config(smoke_config(t), smoke_overrides)) for t in TASKS}
    return [gens[t].predict([record])[0] for t, record in inputs]
