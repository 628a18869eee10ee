"""train.strategy: fsdp on 2 CPU processes (gloo) trains exactly as one process accumulating over the same
global batches, with the base sharded in halves; its checkpoints resume across strategies, mid-epoch included.

One chain of runs (3 epochs of 4 micro-batches) is compared with one uninterrupted single-process run:
fsdp from scratch, killed in epoch 2's evaluation -> resumed in one process from its mid-epoch checkpoint,
preempted in epoch 3 -> resumed under fsdp from that one-process mid-epoch checkpoint, with gradient
checkpointing, to the end. Two torchrun launches in all.
"""

import json
import re
import shutil
import signal

import pytest
import torch
from safetensors.torch import load_file
from test_preemption import signal_at_step

from conftest import ROOT, run_script
from softprompt.cli import run_cli
from softprompt.config import load_config
from softprompt.errors import SoftPromptError
from softprompt.preemption import Preempted
from softprompt.train import train

CONFIG = ROOT / "tests" / "configs" / "smoke" / "qna.yaml"
RUN = "smoke-qna"
# 8 examples in micro-batches of 2: 4 per epoch, 2 optimizer steps of 2 ranks x 1 (or 1 process x 2). 3 validation
# batches, so one rank evaluates one batch fewer; a step line per micro-batch; a checkpoint after every step.
SETS = [
    "train.epochs=3",
    "data.max_train_examples=8",
    "data.max_eval_examples=6",
    "data.max_source_tokens=64",
    "train.eval_batch_size=2",
    "train.log_every=1",
    "train.save_every=1",
    "train.save_every_steps=1",
]
ONE_PROCESS = ["train.grad_accum_steps=2", "train.strategy=ddp"]


def train_here(out, *extra, resume=False):
    """One process, in this one; returns its stdout lines."""
    lines = []
    cfg = load_config(CONFIG, [*SETS, f"train.output_dir={out}", *extra])
    train(cfg, resume=resume, quiet=True, echo=lines.append, results_dir=None)
    return lines


def fsdp(out, *extra, resume=False, env=None):
    """scripts/train.py under torchrun, 2 processes with train.strategy fsdp; `extra`: more --set overrides."""
    args = ["--config", str(CONFIG), "--quiet", *(["--resume"] if resume else [])]
    sets = [*SETS, f"train.output_dir={out}", "train.strategy=fsdp", *extra]
    return run_script("train.py", *args, *(a for s in sets for a in ("--set", s)), env=env, nproc=2)


def records(run_dir, kind):
    return [r for line in (run_dir / "log.jsonl").read_text().splitlines() if (r := json.loads(line))["type"] == kind]


def prompt(ckpt):
    return load_file(str(ckpt / "prompt.safetensors"))["prompt"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(run folder, stdout lines) of the uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("one")
    lines = train_here(out, *ONE_PROCESS)
    return out / RUN, lines


@pytest.fixture(scope="module")
def chain(tmp_path_factory, reference):
    """The fsdp -> one process -> fsdp chain; (run folder, first launch, a copy of the run folder after it (copy it
    again to use it), last launch)."""
    out = tmp_path_factory.mktemp("chain")
    run_dir = out / RUN
    first = fsdp(out, env={"SOFTPROMPT_TEST_CRASH": "eval@2"})  # both ranks die in epoch 2's evaluation
    assert first.returncode != 0 and (run_dir / "latest").read_text().strip() == "epoch_001_step_000001", first.stderr
    after_first = tmp_path_factory.mktemp("after-first") / RUN
    shutil.copytree(run_dir, after_first)
    with pytest.MonkeyPatch.context() as mp:
        signal_at_step(mp, 5, signal.SIGUSR1)  # epoch 3's first step
        with pytest.raises(Preempted):
            train_here(out, *ONE_PROCESS, resume=True)
    assert (run_dir / "latest").read_text().strip() == "epoch_002_step_000002"
    last = fsdp(out, "train.gradient_checkpointing=true", resume=True)
    assert last.returncode == 0, last.stderr[-3000:]
    return run_dir, first, after_first, last


def test_fsdp_with_both_cross_strategy_resumes_ends_as_one_process_accumulating(reference, chain):
    (ref_dir, ref_lines), (run_dir, first, _, last) = reference, chain
    assert f"Resuming from {run_dir / 'epoch_002_step_000002'} (epoch 2, step 5, 1 micro-batches into epoch 3)" in (
        last.stdout
    )
    difference = (prompt(ref_dir / "epoch_003") - prompt(run_dir / "epoch_003")).abs().max().item()
    assert difference <= 1e-5, difference
    # Epoch averages and every step line's loss, over the 3 runs of the chain (the log drops what a crash
    # left after the checkpoint resumed from), match the single process's.
    losses = lambda d: [x for r in records(d, "epoch") for x in (r["train_loss"], r["val_loss"])]  # noqa: E731
    assert len(losses(run_dir)) == 6 and losses(run_dir) == pytest.approx(losses(ref_dir), abs=1e-5)
    steps = lambda d: {(r["epoch"], r["step"]): r["loss"] for r in records(d, "step")}  # noqa: E731
    assert len(steps(run_dir)) == 12 and steps(run_dir) == pytest.approx(steps(ref_dir), abs=1e-5)
    # On stdout, rank 0 alone prints the single process's step lines (epoch 1, before the crash).
    step_line = re.compile(r"Epoch: 0 \| Step: (\d+) \| Loss: ([\d.]+)")
    fsdp_steps = [m.groups() for line in first.stdout.splitlines() if (m := step_line.fullmatch(line))]
    one_steps = [m.groups() for line in ref_lines if (m := step_line.fullmatch(line))]
    assert [s for s, _ in fsdp_steps] == [s for s, _ in one_steps] == ["0", "1", "2", "3"]
    for (_, a), (_, b) in zip(fsdp_steps, one_steps, strict=True):
        assert float(a) == pytest.approx(float(b), abs=1e-5)


def test_each_rank_holds_half_of_the_base(chain, tiny):
    base, _ = tiny
    total = sum(p.numel() for p in base.parameters())
    # Each rank counts the local shards of its parameters (DTensors); rank 0 prints them all.
    note = re.search(
        r"the base's ([\d,]+) parameters sharded over 2 ranks \(each holds ([\d,]+), ([\d,]+)\)", chain[1].stderr
    )
    assert note, chain[1].stderr[-3000:]
    sharded, *held = (int(n.replace(",", "")) for n in note.groups())
    assert sharded == total == sum(held)
    assert all(abs(n - total / 2) <= 0.01 * total for n in held), held


def test_an_fsdp_checkpoint_resumes_in_one_process(reference, chain, tmp_path):
    """The first launch's mid-epoch checkpoint (2 ranks x 1 micro-batch into epoch 2), resumed in one process."""
    ref_dir, _ = reference
    run_dir = shutil.copytree(chain[2], tmp_path / RUN)
    lines = train_here(run_dir.parent, *ONE_PROCESS, resume=True)
    assert f"Resuming from {run_dir / 'epoch_001_step_000001'} (epoch 1, step 3, 2 micro-batches into epoch 2)" in lines
    torch.testing.assert_close(prompt(run_dir / "epoch_003"), prompt(ref_dir / "epoch_003"), atol=1e-5, rtol=0)


def train_script(*argv):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_script", ROOT / "scripts" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return run_cli(module.main, list(argv))


def test_fsdp_in_one_process_is_refused_before_anything_is_touched(reference, tmp_path, monkeypatch, capsys):
    ref_dir, _ = reference
    out = tmp_path / "out"
    shutil.copytree(ref_dir, out / RUN)
    before = sorted(p.name for p in (out / RUN).iterdir())
    args = ["--config", str(CONFIG), "--set", f"train.output_dir={out}", "--set", "train.strategy=fsdp"]
    for world in (None, "1"):  # no torchrun; torchrun --nproc_per_node 1
        if world:
            monkeypatch.setenv("WORLD_SIZE", world)
        assert train_script(*args, "--overwrite") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "torchrun --nproc_per_node N" in err and "train.strategy: ddp" in err, err
    assert sorted(p.name for p in (out / RUN).iterdir()) == before  # --overwrite deleted nothing


def test_resume_with_another_prompt_shape_or_an_unreachable_position_is_one_line(reference, tmp_path):
    ref_dir, _ = reference
    run_dir = tmp_path / RUN
    shutil.copytree(ref_dir, run_dir)
    with pytest.raises(SoftPromptError) as info:
        train_here(tmp_path, *ONE_PROCESS, "model.prompt_length=5", "model.init=text", resume=True)
    message = str(info.value)
    assert "\n" not in message and str(run_dir / "epoch_003" / "prompt.safetensors") in message
    assert "[4, 64]" in message and "[5, 64]" in message
    assert (run_dir / "latest").read_text().strip() == "epoch_003" and (run_dir / "epoch_003").is_dir()


def test_a_mid_epoch_checkpoint_between_global_batches_of_this_run_is_refused(chain, tmp_path):
    # 2 ranks x 1 micro-batch into epoch 2 is halfway through a global batch of 1 process x 4.
    run_dir = shutil.copytree(chain[2], tmp_path / RUN)
    with pytest.raises(
        SoftPromptError,
        match=r"cannot resume from .*epoch_001_step_000001 with 1 process\(es\) x "
        r"train.grad_accum_steps=4: it stopped 2 micro-batches into epoch 2",
    ):
        train_here(run_dir.parent, "train.grad_accum_steps=4", "train.strategy=ddp", resume=True)
