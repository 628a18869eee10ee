"""Preemption (SIGTERM, SIGUSR1) and a full disk: training stops at an exact resume point, and --resume ends
bit-identical to test_reliability's uninterrupted reference run (4 epochs of 6 micro-batches)."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_reliability
import torch
from safetensors.torch import load_file
from test_reliability import ARGS, RUN, assert_same_as_reference, epochs_on_disk, train_here

import softprompt.checkpoint
from conftest import ROOT, free_port
from softprompt.checkpoint import latest_checkpoint, verify
from softprompt.errors import SoftPromptError
from softprompt.preemption import EXIT_PREEMPTED, Preempted

train_module = sys.modules["softprompt.train"]  # (the package's `train` attribute is the function)
reference = test_reliability.reference  # the same uninterrupted run, as a fixture of this module too


def signal_at_step(monkeypatch, step, sig):
    """Send this process `sig` right after optimizer step `step` (a real signal, to the real handler)."""
    real = train_module.optimizer_step

    def stepping(trained, pos, *rest):
        norm = real(trained, pos, *rest)
        if pos.global_step == step:
            signal.raise_signal(sig)
        return norm

    monkeypatch.setattr(train_module, "optimizer_step", stepping)


def test_sigusr1_checkpoints_at_the_step_and_resume_is_bit_identical(reference, tmp_path, monkeypatch, capsys):
    signal_at_step(monkeypatch, 8, signal.SIGUSR1)  # epoch 2, after its 2nd micro-batch
    with pytest.raises(Preempted):
        train_here(tmp_path)
    err = capsys.readouterr().err
    run_dir = tmp_path / RUN
    ckpt = run_dir / "epoch_001_step_000002"
    assert re.search(rf"stopped on SIGUSR1 after step 8 .*saved {re.escape(str(ckpt))}.*--resume", err)
    assert latest_checkpoint(run_dir) == ckpt and (run_dir / "latest").read_text().strip() == ckpt.name
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # the handlers are put back
    monkeypatch.undo()
    train_here(tmp_path, resume=True)
    assert "Resuming from" in capsys.readouterr().out
    assert_same_as_reference(run_dir, reference)


def test_a_stop_at_an_epochs_last_step_resumes_into_its_evaluation(reference, tmp_path, monkeypatch):
    signal_at_step(monkeypatch, 12, signal.SIGTERM)  # the last micro-batch of epoch 2, before its evaluation
    with pytest.raises(Preempted):
        train_here(tmp_path)
    assert latest_checkpoint(tmp_path / RUN) == tmp_path / RUN / "epoch_001_step_000006"
    monkeypatch.undo()
    train_here(tmp_path, resume=True)
    assert_same_as_reference(tmp_path / RUN, reference)


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_resume_continues(reference, tmp_path, monkeypatch):
    real, calls = softprompt.checkpoint.save_file, []

    def full_on_the_third(tensors, path, *args, **kwargs):  # trainer_state of epoch_003
        calls.append(path)
        if len(calls) == 3:
            Path(path).write_bytes(b"\0" * 7)  # what a write cut short leaves
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(softprompt.checkpoint, "save_file", full_on_the_third)
    with pytest.raises(SoftPromptError) as info:
        train_here(tmp_path)
    run_dir = tmp_path / RUN
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message and "epoch_003" in message
    assert f"the previous checkpoint, {run_dir / 'epoch_002'}, and `latest` are intact" in message
    assert epochs_on_disk(run_dir) == ["epoch_001", "epoch_002"] and not list(run_dir.glob(".*.tmp"))
    assert (run_dir / "latest").read_text().strip() == "epoch_002" and verify(run_dir / "epoch_002") is None
    monkeypatch.undo()
    train_here(tmp_path, resume=True)
    assert_same_as_reference(run_dir, reference)


def start(out, *extra, env=None):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *ARGS, "--set", f"train.output_dir={out}", *extra],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigterm_then_a_second_signal_during_the_save_exits_75_and_resumes_bit_identical(reference, tmp_path):
    # Every checkpoint write dawdles 2 s between its tensor files and its metadata (test hook): the second
    # signal lands inside one, which must finish whole.
    proc = start(
        tmp_path, "--results-dir", str(tmp_path / "results"), env={"SOFTPROMPT_TEST_CRASH": "checkpoint-slow@*"}
    )
    seen, signalled = [], 0
    for line in proc.stdout:
        seen.append(line)
        if signalled == 0 and line.startswith("Epoch: 1 | Step: 2 |"):
            proc.send_signal(signal.SIGTERM)
            signalled = 1
        elif signalled == 1 and "test hook: slow at checkpoint" in line:
            proc.send_signal(signal.SIGUSR1)
            signalled = 2
    status = proc.wait(timeout=120)
    out = "".join(seen)
    assert status == EXIT_PREEMPTED == 75, out
    assert signalled == 2 and len(re.findall(r"stopped on SIGTERM after step \d+", out)) == 1, out
    run_dir = tmp_path / RUN
    newest = latest_checkpoint(run_dir)
    assert newest is not None and verify(newest) is None and newest.name.startswith("epoch_001")
    assert (run_dir / "latest").read_text().strip() == newest.name and not list(run_dir.glob(".*.tmp"))
    train_here(tmp_path, resume=True)
    assert_same_as_reference(run_dir, reference)


def local_rank_pids(parent: int) -> dict[int, int]:
    """{LOCAL_RANK: pid} of torchrun's worker processes."""
    found = {}
    for task in Path(f"/proc/{parent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
            if "LOCAL_RANK" in env:
                found[int(env["LOCAL_RANK"])] = int(pid)
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers through /proc")
def test_under_torchrun_a_signal_to_one_rank_stops_both_at_the_same_step(tmp_path):
    """SIGUSR1 to rank 1 only: both ranks agree on the step (rank 0 writes the checkpoint) and exit 75."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    proc = subprocess.Popen(
        [*cmd, str(ROOT / "scripts" / "train.py"), *ARGS, "--set", f"train.output_dir={tmp_path}"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Epoch: 1 | Step: 2 |"):
            deadline = time.time() + 10
            while len(ranks := local_rank_pids(proc.pid)) < 2 and time.time() < deadline:
                time.sleep(0.1)
            os.kill(ranks[1], signal.SIGUSR1)
    proc.wait(timeout=120)
    out = "".join(seen)
    assert len(re.findall(r"stopped on SIGUSR1 after step (\d+)", out)) == 1, out  # rank 0 alone talks
    assert re.search(r"exitcode\s*:\s*75", out), out  # torchrun reports each worker's status
    run_dir = tmp_path / RUN
    newest = latest_checkpoint(run_dir)
    assert newest is not None and verify(newest) is None and newest.name.startswith("epoch_001_step_")
    state = json.loads((newest / "trainer_state.json").read_text())
    step = int(re.search(r"after step (\d+)", out)[1])
    assert state["global_step"] == step
    assert torch.isfinite(load_file(str(newest / "prompt.safetensors"))["prompt"]).all()
