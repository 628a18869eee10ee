"""torchrun with 2 CPU processes (gloo) equals one process accumulating over the same global batches."""

import json
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


def test_two_process_ddp_killed_mid_epoch_and_resumed_matches_single_process_accumulation(tmp_path):
    """2 ranks x 1 micro-batch = 1 rank x 2 accumulated; the DDP run also dies in epoch 2 and resumes mid-epoch."""
    common = ["--config", "configs/smoke/qna.yaml", "--quiet", "--set", "train.epochs=3"]
    single = run_script("train.py", *common, "--set", f"train.output_dir={tmp_path / 'one'}",
                        "--set", "train.grad_accum_steps=2")
    assert single.returncode == 0, single.stderr

    def torchrun(*extra, env=None):
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
             str(ROOT / "scripts" / "train.py"), *common, "--set", f"train.output_dir={tmp_path / 'two'}",
             "--set", "train.save_every_steps=3", *extra],
            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, capture_output=True, text=True,
            timeout=300,
        )

    # Both ranks die in epoch 2's evaluation: 10 global steps per epoch, so the newest checkpoint is the one
    # at global step 18, 8 micro-batches (per rank) into epoch 2.
    killed = torchrun(env={"SOFTPROMPT_TEST_CRASH": "eval@2"})
    assert killed.returncode != 0
    ddp = torchrun("--resume")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    run_dir = tmp_path / "two" / "smoke-qna"
    assert f"Resuming from {run_dir / 'epoch_001_step_000008'} (epoch 1, step 18, 8 micro-batches into epoch 2)" in ddp.stdout
    a = load_file(str(tmp_path / "one" / "smoke-qna" / "epoch_003" / "prompt.safetensors"))["prompt"]
    b = load_file(str(run_dir / "epoch_003" / "prompt.safetensors"))["prompt"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # only rank 0 talks: each epoch line appears once, with the single process's losses (ranks averaged)
    assert ddp.stdout.count("Epoch: 3 | Average train loss") == 1
    single_averages = [float(l.rsplit(" ", 1)[1]) for l in single.stdout.splitlines() if "Average" in l]
    records = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines()]
    ddp_averages = [x for r in records if r["type"] == "epoch" for x in (r["train_loss"], r["val_loss"])]
    assert len(ddp_averages) == 6
    assert ddp_averages == pytest.approx(single_averages, abs=1e-5)
