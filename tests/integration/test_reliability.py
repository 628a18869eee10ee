"""Crashes, resume and non-finite losses, with real training subprocesses killed by SIGKILL.

Every run trains tests/configs/smoke/qna.yaml shrunk to a few seconds (4 epochs of 6
micro-batches, a checkpoint after each epoch). The reference is one
uninterrupted run; a run killed anywhere and continued with --resume must end
with the reference's prompt bit for bit and the reference's logged losses.
The kill points inside evaluation and the checkpoint write, and a NaN loss, are
the test hooks of softprompt.testing (SOFTPROMPT_TEST_CRASH, SOFTPROMPT_TEST_NAN_BATCH),
counted afresh by each training run.
"""

import contextlib
import io
import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, run_script
from conftest import train_until_killed as kill_at
from softprompt.checkpoint import latest_checkpoint, verify
from softprompt.config import load_config
from softprompt.errors import SoftPromptError
from softprompt.train import train as train_in_process

RUN = "smoke-qna"
SETS = [
    "train.epochs=4",
    "train.save_every=1",
    "train.log_every=2",
    "data.max_train_examples=12",
    "data.max_eval_examples=4",
    "data.max_source_tokens=64",
]
ARGS = ["--config", "tests/configs/smoke/qna.yaml", "--quiet", *(a for s in SETS for a in ("--set", s))]


def train(out, *extra, env=None):
    """scripts/train.py with the short config into `out`; returns the CompletedProcess."""
    return run_script(
        "train.py", *ARGS, "--set", f"train.output_dir={out}", "--results-dir", str(out / "results"), *extra, env=env
    )


def train_until_killed(out, pattern, *extra, env=None):
    """The smoke run in `out`, SIGKILLed once an output line matches `pattern`; returns the output so far."""
    args = [*ARGS, "--set", f"train.output_dir={out}", "--results-dir", str(out / "results"), *extra]
    return kill_at(args, pattern, env=env)


def train_here(out, *overrides, resume=False, overwrite=False):
    """The same training in this process (no interpreter start-up)."""
    cfg = load_config(ROOT / "tests" / "configs" / "smoke" / "qna.yaml", [*SETS, f"train.output_dir={out}", *overrides])
    return train_in_process(cfg, resume=resume, overwrite=overwrite, quiet=True, echo=print, results_dir=None)


def prompt(run_dir, epoch=4):
    return load_file(str(run_dir / f"epoch_{epoch:03d}" / "prompt.safetensors"))["prompt"]


def losses(run_dir):
    """The logged losses, without the wall-clock times."""
    return [
        (r["type"], r["epoch"], r.get("step"), r.get("loss"), r.get("train_loss"), r.get("val_loss"))
        for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
    ]


def epochs_on_disk(run_dir):
    return sorted(p.name for p in run_dir.glob("epoch_*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(run folder, stderr) of one uninterrupted run (in this process; resumed subprocess runs must match it)."""
    out = tmp_path_factory.mktemp("reference")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        train_here(out)
    return out / RUN, stderr.getvalue()


def assert_same_as_reference(run_dir, reference):
    ref_dir, _ = reference
    assert torch.equal(prompt(run_dir), prompt(ref_dir))
    assert losses(run_dir) == losses(ref_dir)
    assert (run_dir / "latest").read_text().strip() == "epoch_004"


def test_reference_run_logs_every_epoch_and_notes_the_cut_sources(reference):
    run_dir, stderr = reference
    records = losses(run_dir)
    assert [r[1] for r in records if r[0] == "epoch"] == [1, 2, 3, 4]
    assert [(r[1], r[2]) for r in records if r[0] == "step"] == [
        (e, s) for e in range(4) for s in (0, 2, 4)
    ]  # as the reference: from 0
    # Every sample context is longer than the 64-token source budget: cut and counted, not an error.
    assert "note: train: 12 source(s) cut to 64 tokens" in stderr


def test_killed_five_times_and_resumed_ends_bit_identical(reference, tmp_path):
    """One run killed at five points in turn (each resume continues the previous one's state)."""
    run_dir = tmp_path / RUN

    # 1. Inside the very first checkpoint write: nothing saved yet.
    train_until_killed(tmp_path, "test hook: paused at checkpoint", env={"SOFTPROMPT_TEST_CRASH": "checkpoint-pause"})
    assert epochs_on_disk(run_dir) == [] and (run_dir / ".epoch_001.tmp").is_dir()
    again = train(tmp_path)  # without --resume: refused, so two runs' logs never mix
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "--resume" in again.stderr

    # 2. --resume with no checkpoint starts over; killed mid-epoch 2.
    out = train_until_killed(tmp_path, r"^Epoch: 1 \| Step: 4 \|", "--resume")
    assert "no usable checkpoint" in out and "starting from the beginning" in out
    assert epochs_on_disk(run_dir) == ["epoch_001"]

    # 3. Killed during the evaluation that ends epoch 2.
    out = train_until_killed(
        tmp_path, "test hook: paused at eval", "--resume", env={"SOFTPROMPT_TEST_CRASH": "eval-pause"}
    )
    assert f"Resuming from {run_dir / 'epoch_001'} (epoch 1, step 6)" in out
    assert [r[1] for r in losses(run_dir) if r[0] == "epoch"] == [1]  # epoch 2 trained, not yet scored
    assert ("step", 1, 4) in [r[:3] for r in losses(run_dir)]

    # 4. Killed after epoch_002 got its real name, before `latest` moved to it.
    train_until_killed(
        tmp_path, "test hook: paused at latest", "--resume", env={"SOFTPROMPT_TEST_CRASH": "latest-pause"}
    )
    assert epochs_on_disk(run_dir) == ["epoch_001", "epoch_002"]
    assert (run_dir / "latest").read_text().strip() == "epoch_001"
    assert latest_checkpoint(run_dir) == run_dir / "epoch_002"  # complete, so evaluation and resume use it

    # 5. Killed halfway through writing epoch_003 (tensors written, metadata not).
    out = train_until_killed(
        tmp_path, "test hook: paused at checkpoint", "--resume", env={"SOFTPROMPT_TEST_CRASH": "checkpoint-pause"}
    )
    assert f"Resuming from {run_dir / 'epoch_002'}" in out
    assert epochs_on_disk(run_dir) == ["epoch_001", "epoch_002"] and (run_dir / ".epoch_003.tmp").is_dir()

    resumed = train(tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resuming from {run_dir / 'epoch_002'} (epoch 2, step 12)" in resumed.stdout
    assert not (run_dir / ".epoch_003.tmp").exists()
    assert_same_as_reference(run_dir, reference)


def test_killed_mid_epoch_resumes_from_the_mid_epoch_checkpoint_bit_identical(reference, tmp_path, capsys):
    """train.save_every_steps=2: a kill inside epoch 3 loses only the micro-batches after its last checkpoint."""
    run_dir = tmp_path / RUN
    steps = ("--set", "train.save_every_steps=2")
    # Paused in epoch 3's evaluation: its 6 micro-batches are done, the last checkpoint is 4 into it.
    train_until_killed(tmp_path, "test hook: paused at eval", *steps, env={"SOFTPROMPT_TEST_CRASH": "eval-pause@3"})
    # Only the newest mid-epoch checkpoint is kept (step 2 of epoch 3 was superseded by step 4).
    assert epochs_on_disk(run_dir) == ["epoch_001", "epoch_002", "epoch_002_step_000004"]
    assert latest_checkpoint(run_dir) == run_dir / "epoch_002_step_000004"
    assert ("step", 2, 4) in [r[:3] for r in losses(run_dir)]  # logged by the killed run, after the checkpoint

    train_here(tmp_path, "train.save_every_steps=2", resume=True)  # in this process: one interpreter start less
    assert (
        f"Resuming from {run_dir / 'epoch_002_step_000004'} (epoch 2, step 16, 4 micro-batches into epoch 3)"
        in capsys.readouterr().out
    )
    assert_same_as_reference(run_dir, reference)  # the step-4 record rewritten once, losses bit-identical
    # Epoch checkpoints supersede mid-epoch ones: epoch 4's step-2 and step-4 checkpoints are gone too.
    assert epochs_on_disk(run_dir) == ["epoch_001", "epoch_002", "epoch_003", "epoch_004"]


def test_same_config_and_seed_give_identical_losses_and_overwrite_starts_afresh(reference, tmp_path):
    ref_dir, _ = reference
    shutil.copytree(ref_dir, tmp_path / RUN)
    (tmp_path / RUN / "epoch_009").mkdir()  # a leftover of an earlier, longer run
    train_here(tmp_path, overwrite=True)
    assert not (tmp_path / RUN / "epoch_009").exists()
    assert_same_as_reference(tmp_path / RUN, reference)


def test_corrupted_newest_checkpoint_is_named_and_resume_falls_back(reference, tmp_path, capsys):
    ref_dir, _ = reference
    run_dir = tmp_path / RUN
    shutil.copytree(ref_dir, run_dir)
    bad = run_dir / "epoch_004" / "prompt.safetensors"
    flipped = bytearray(bad.read_bytes())
    flipped[-4:] = bytes(b ^ 0xFF for b in flipped[-4:])  # the last float's bits: still loads, wrong values
    bad.write_bytes(bytes(flipped))
    warnings = []
    assert latest_checkpoint(run_dir, warn=warnings.append) == run_dir / "epoch_003"  # what evaluation reads
    assert "epoch_004: prompt.safetensors does not match its recorded SHA-256" in warnings[0]
    capsys.readouterr()
    train_here(tmp_path, resume=True)
    out = capsys.readouterr()
    assert re.search(r"epoch_004: prompt\.safetensors does not match .*; falling back to epoch_003", out.err)
    assert f"Resuming from {run_dir / 'epoch_003'}" in out.out
    assert_same_as_reference(run_dir, reference)  # epoch 4 trained again, and its checkpoint rewritten


def test_a_nan_loss_stops_the_run_naming_epoch_and_step_and_keeps_the_checkpoints(tmp_path, monkeypatch):
    # Batches are counted over training and evaluation: 6 + 1 per epoch, so batch 16 is epoch 3's second.
    monkeypatch.setenv("SOFTPROMPT_TEST_NAN_BATCH", "16")
    with pytest.raises(SoftPromptError) as info:
        train_here(tmp_path)
    assert re.search(r"\b(step|micro-batch) 2\b.*\bepoch 3\b|\bepoch 3\b.*\bstep 2\b", str(info.value))
    assert "\n" not in str(info.value)
    run_dir = tmp_path / RUN
    assert epochs_on_disk(run_dir) == ["epoch_001", "epoch_002"]
    assert (run_dir / "latest").read_text().strip() == "epoch_002" and verify(run_dir / "epoch_002") is None


def test_a_nan_loss_with_on_nonfinite_skip_drops_that_batch_and_goes_on(reference, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOFTPROMPT_TEST_NAN_BATCH", "2")
    train_here(tmp_path, "train.on_nonfinite=skip")
    assert re.search(r"non-finite loss at epoch 1, step 2\b.*skipped", capsys.readouterr().err)
    records = losses(tmp_path / RUN)
    assert [r[1] for r in records if r[0] == "epoch"] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor([r[4], r[5]])).all() for r in records if r[0] == "epoch")
    assert records != losses(reference[0])  # trained without that batch
    assert verify(tmp_path / RUN / "epoch_004") is None
    logged = [json.loads(l) for l in (tmp_path / RUN / "log.jsonl").read_text().splitlines()]
    assert [r["skipped_batches"] for r in logged if r["type"] == "epoch"] == [1, 0, 0, 0]  # the skip is counted
