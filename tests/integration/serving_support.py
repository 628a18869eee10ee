"""Starting and stopping the real server for the serving tests: scripts/serve.py in a subprocess on a free
localhost port, the session's smoke prompts, bounded waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import ROOT, free_port, smoke_config
from softprompt.config import load_config
from softprompt.data import load_raw
from softprompt.generate import Generator

TASKS = ("qna", "sum", "tx")


def prompt_dirs(smoke_overrides) -> dict[str, Path]:
    """{task: run folder} of the session's smoke trainings (conftest.smoke_overrides)."""
    out = next(s.split("=", 1)[1] for s in smoke_overrides if s.startswith("train.output_dir="))
    return {t: Path(out) / load_config(smoke_config(t)).run_name for t in TASKS}


class Server:
    """scripts/serve.py running in a subprocess; `url` once it answers /health."""

    def __init__(self, prompts: dict[str, Path], *flags: str, env: dict | None = None, timeout: float = 240):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [a for name, path in prompts.items() for a in ("--prompt", f"{name}={path}")]
        cmd = [sys.executable, str(ROOT / "scripts/serve.py"), *args, "--port", str(self.port), *flags]
        self.log = open(Path(os.environ["SOFTPROMPT_CACHE"]).parent / f"serve-{self.port}.log", "w+")
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve.py exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"serve.py did not answer within {timeout} s: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def rss_kb(self) -> int:
        """The server process's resident memory (VmRSS), in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM, then the exit status (killed if it does not exit within `timeout`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.log.close()
        return self.proc.returncode


def sample_inputs(smoke_overrides, per_task: int = 4) -> list[tuple[str, dict]]:
    """(task, record) pairs: the first records of each task's evaluation split, with only its source fields."""
    out = []
    for t in TASKS:
        cfg = load_config(smoke_config(t), smoke_overrides)
        split = cfg.data.eval_split or cfg.task.eval_split
        out += [(t, dict(r)) for r in list(load_raw(cfg, (split,), cap_eval=False)[split])[:per_task]]
    return out


def expected_outputs(smoke_overrides, inputs: list[tuple[str, dict]]) -> list[str]:
    """generate.py's prediction for each input alone (greedy), from the same checkpoints."""
    gens = {t: Generator.load(load_config(smoke_config(t), smoke_overrides)) for t in TASKS}
    return [gens[t].predict([record])[0] for t, record in inputs]
