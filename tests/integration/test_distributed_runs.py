"""torchrun with 2 CPU processes (gloo) equals one process accumulating over the same global batches, also
killed mid-epoch and resumed, and on two nodes without a shared disk.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, free_port, run_script


def test_two_process_ddp_killed_mid_epoch_and_resumed_matches_single_process_accumulation(tmp_path):
    """2 ranks x 1 micro-batch = 1 rank x 2 accumulated; the DDP run also dies in epoch 2 and resumes mid-epoch."""
    common = ["--config", "tests/configs/smoke/qna.yaml", "--quiet", "--set", "train.epochs=3"]
    single = run_script(
        "train.py", *common, "--set", f"train.output_dir={tmp_path / 'one'}", "--set", "train.grad_accum_steps=2"
    )
    assert single.returncode == 0, single.stderr

    def torchrun(*extra, env=None):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node",
                "2",
                "--master_port",
                str(free_port()),
                str(ROOT / "scripts" / "train.py"),
                *common,
                "--set",
                f"train.output_dir={tmp_path / 'two'}",
                "--set",
                "train.save_every_steps=3",
                *extra,
            ],
            cwd=ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )

    # Both ranks die in epoch 2's evaluation: 10 global steps per epoch, so the newest checkpoint is the one
    # at global step 18, 8 micro-batches (per rank) into epoch 2.
    killed = torchrun(env={"SOFTPROMPT_TEST_CRASH": "eval@2"})
    assert killed.returncode != 0
    ddp = torchrun("--resume")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    run_dir = tmp_path / "two" / "smoke-qna"
    assert (
        f"Resuming from {run_dir / 'epoch_001_step_000008'} (epoch 1, step 18, 8 micro-batches into epoch 2)"
        in ddp.stdout
    )
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

    # Step lines count the global micro-batches: the 2 ranks print the single process's lines (epoch 3, after the
    # resume), each with the same micro-batch's loss.
    def step_lines(out):
        return [line.split(" | ") for line in out.splitlines() if line.startswith("Epoch: 2 | Step:")]

    single_steps, ddp_steps = step_lines(single.stdout), step_lines(ddp.stdout)
    assert [s[1] for s in single_steps] == ["Step: 0", "Step: 10"] and [s[1] for s in ddp_steps] == [
        "Step: 0",
        "Step: 10",
    ]
    for a, b in zip(single_steps, ddp_steps, strict=True):
        assert float(a[2].split()[1]) == pytest.approx(float(b[2].split()[1]), abs=1e-5)


def test_resume_on_two_nodes_without_a_shared_disk_reads_the_checkpoint_on_rank_0_only(tmp_path):
    """Rank 1 runs in a folder with no run folder (as on a second node): rank 0 sends it the checkpoint."""
    config = str(ROOT / "tests" / "configs" / "smoke" / "qna.yaml")
    sets = ["train.epochs=2", "data.max_train_examples=8", "data.max_eval_examples=4", "train.dist_timeout_minutes=1"]
    args = [a for s in sets for a in ("--set", s)]
    node0, node1, single = tmp_path / "node0", tmp_path / "node1", tmp_path / "single"
    for folder in (node0, node1, single):
        folder.mkdir()
    # Epoch 1 on one process (accumulating 2 micro-batches = 2 ranks x 1), then resumed on 2 ranks for epoch 2.
    script = str(ROOT / "scripts" / "train.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Each "node" has its own disk: its own output_dir (relative paths in --set resolve against the config file).
    out = {folder: ["--set", f"train.output_dir={folder / 'ckpt'}"] for folder in (node0, node1, single)}
    run = lambda cwd, *extra: subprocess.run(  # noqa: E731
        [
            sys.executable,
            script,
            "--config",
            config,
            "--quiet",
            *args,
            *out[cwd],
            "--results-dir",
            str(tmp_path / "r"),
            *extra,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run(node0, "--set", "train.epochs=1", "--set", "train.grad_accum_steps=2").returncode == 0
    assert run(single, "--set", "train.grad_accum_steps=2").returncode == 0

    port = str(free_port())
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                script,
                "--config",
                config,
                "--quiet",
                *args,
                *out[cwd],
                "--results-dir",
                str(tmp_path / "r"),
                "--resume",
            ],
            cwd=cwd,
            env={
                **env,
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "WORLD_SIZE": "2",
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank, cwd in enumerate((node0, node1))
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert "Resuming from" in outs[0][0] and not (node1 / "ckpt").exists()  # rank 1 wrote and read nothing
    a = load_file(str(single / "ckpt" / "smoke-qna" / "epoch_002" / "prompt.safetensors"))["prompt"]
    b = load_file(str(node0 / "ckpt" / "smoke-qna" / "epoch_002" / "prompt.safetensors"))["prompt"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
