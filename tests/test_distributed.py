"""torchrun with 2 CPU processes (gloo) equals one process accumulating over the same global batches."""

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, run_script
from softprompt.distributed import Dist, shard


def test_shard_gives_each_rank_its_accum_slice_of_every_global_batch():
    batches = [[i] for i in range(11)]
    r0, dropped = shard(batches, Dist(rank=0, world=2), accum=2)
    r1, _ = shard(batches, Dist(rank=1, world=2), accum=2)
    assert r0 == [[0], [1], [4], [5]] and r1 == [[2], [3], [6], [7]] and dropped == 3
    assert shard(batches, Dist(), accum=2) == (batches, 0)


def test_two_process_ddp_matches_single_process_accumulation(tmp_path):
    common = ["--config", "configs/smoke/qna.yaml", "--quiet", "--set", "train.epochs=3"]
    single = run_script("train.py", *common, "--set", f"train.output_dir={tmp_path / 'one'}",
                        "--set", "train.grad_accum_steps=2")
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         str(ROOT / "scripts" / "train.py"), *common, "--set", f"train.output_dir={tmp_path / 'two'}"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "smoke-qna" / "epoch_003" / "prompt.safetensors"))["prompt"]
    b = load_file(str(tmp_path / "two" / "smoke-qna" / "epoch_003" / "prompt.safetensors"))["prompt"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # only rank 0 talks: each epoch line appears once, with the single process's losses (ranks averaged)
    assert ddp.stdout.count("Epoch: 3 | Average train loss") == 1

    def averages(out):
        return [float(l.rsplit(" ", 1)[1]) for l in out.splitlines() if "Average" in l]

    assert len(averages(ddp.stdout)) == 6
    assert averages(ddp.stdout) == pytest.approx(averages(single.stdout), abs=1e-5)
