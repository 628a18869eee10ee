"""The training CLI end to end on the smoke configs (subprocesses, built-in model, bundled samples)."""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors.torch import load_file

import conftest
from conftest import TASK_NAMES, run_script, smoke_config
from softprompt.config import load_config

STEP_LINE = re.compile(r"^Epoch: \d+ \| Step: \d+ \| Loss: \d+\.\d{6}$")
TRAIN_LINE = re.compile(r"^Epoch: (\d+) \| Average train loss: (\d+\.\d{6})$")
VAL_LINE = re.compile(r"^Epoch: (\d+) \| Average val loss: (\d+\.\d{6})$")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One full smoke run per registered task (10 epochs), shared by the tests below."""
    out = tmp_path_factory.mktemp("ckpt")

    def run(task):
        return run_script(
            "train.py",
            "--config",
            str(smoke_config(task)),
            "--set",
            f"train.output_dir={out}",
            env={"OMP_NUM_THREADS": "1"},
        )

    with ThreadPoolExecutor(max_workers=3) as pool:  # three processes at once: most of a tiny run is start-up
        procs = dict(zip(TASK_NAMES, pool.map(run, TASK_NAMES), strict=True))
    for proc in procs.values():
        assert proc.returncode == 0, proc.stderr
    return {task: (proc, out / load_config(smoke_config(task)).run_name) for task, proc in procs.items()}


@pytest.mark.parametrize("task", TASK_NAMES)
def test_smoke_run_logs_in_the_reference_format_and_checkpoints(runs, task):
    proc, run_dir = runs[task]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("Epoch:")]
    steps = [l for l in lines if "Step:" in l]
    trains = [TRAIN_LINE.match(l) for l in lines if "train loss" in l]
    vals = [VAL_LINE.match(l) for l in lines if "val loss" in l]
    assert steps and all(STEP_LINE.match(l) for l in steps)
    # As the reference: epochs and micro-batches counted from 0, a line at micro-batch 0 and every log_every after
    assert [l.split(" | Loss")[0] for l in steps[:3]] == [
        "Epoch: 0 | Step: 0",
        "Epoch: 0 | Step: 10",
        "Epoch: 1 | Step: 0",
    ]
    assert [int(m.group(1)) for m in trains] == list(range(1, 11))  # epoch lines count from 1
    assert [int(m.group(1)) for m in vals] == list(range(1, 11))
    first, last = float(trains[0].group(2)), float(trains[-1].group(2))
    assert last < first  # the loss falls
    assert sorted(p.name for p in run_dir.glob("epoch_*")) == ["epoch_003", "epoch_006", "epoch_009", "epoch_010"]
    assert (run_dir / "latest").read_text().strip() == "epoch_010"
    for ckpt in run_dir.glob("epoch_*"):
        assert {p.name for p in ckpt.iterdir()} == {
            "prompt.safetensors",
            "prompt.json",
            "trainer_state.safetensors",
            "trainer_state.json",
        }
    png = conftest.RESULTS[0] / run_dir.name / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"Loss curves: {png}" in proc.stdout
    meta = json.loads((run_dir / "epoch_010" / "prompt.json").read_text())
    assert meta["task"] == task and meta["prompt_length"] == 4 and meta["epoch"] == 10
    assert meta["base_model"] == "builtin:tiny-gpt2"
    records = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert len(epochs) == len(trains) == 10  # else the zip below compares nothing
    assert [r["train_loss"] for r in epochs] == [float(m.group(2)) for m in trains] or all(
        abs(r["train_loss"] - float(m.group(2))) < 1e-6 for r, m in zip(epochs, trains, strict=False)
    )


def test_prompt_checkpoint_is_small_and_holds_only_the_prompt(runs):
    _, run_dir = runs["sum"]
    tensors = load_file(str(run_dir / "epoch_010" / "prompt.safetensors"))
    assert list(tensors) == ["prompt"] and tensors["prompt"].shape == (4, 64)
    assert (run_dir / "epoch_010" / "prompt.safetensors").stat().st_size < 4096


def test_resume_after_stopping_at_epoch_3_gives_the_same_prompt(runs, tmp_path):
    _, full_dir = runs["qna"]
    one_thread = {"OMP_NUM_THREADS": "1"}  # as the reference: bit-exact float sums need the same thread count
    first = run_script(
        "train.py",
        "--config",
        "tests/configs/smoke/qna.yaml",
        "--set",
        f"train.output_dir={tmp_path}",
        "--set",
        "train.epochs=3",
        env=one_thread,
    )
    assert first.returncode == 0, first.stderr
    resumed = run_script(
        "train.py",
        "--config",
        "tests/configs/smoke/qna.yaml",
        "--set",
        f"train.output_dir={tmp_path}",
        "--resume",
        env=one_thread,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stdout and "train.epochs: 3 in the checkpoint, 10 now" in resumed.stderr
    ours = load_file(str(tmp_path / "smoke-qna" / "epoch_010" / "prompt.safetensors"))["prompt"]
    reference = load_file(str(full_dir / "epoch_010" / "prompt.safetensors"))["prompt"]
    assert torch.equal(ours, reference)
    log = (tmp_path / "smoke-qna" / "log.jsonl").read_text()
    assert log == (full_dir / "log.jsonl").read_text().replace(str(full_dir), str(tmp_path)) or [
        (r["type"], r.get("loss"), r.get("train_loss"), r.get("val_loss")) for r in map(json.loads, log.splitlines())
    ] == [
        (r["type"], r.get("loss"), r.get("train_loss"), r.get("val_loss"))
        for r in map(json.loads, (full_dir / "log.jsonl").read_text().splitlines())
    ]


def test_rerun_without_resume_refuses_to_overwrite(runs, tmp_path):
    _, run_dir = runs["tx"]
    before = (run_dir / "epoch_010" / "prompt.safetensors").read_bytes()
    proc = run_script(
        "train.py", "--config", "tests/configs/smoke/tx.yaml", "--set", f"train.output_dir={run_dir.parent}"
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "--resume" in proc.stderr and "Traceback" not in proc.stderr
    assert (run_dir / "epoch_010" / "prompt.safetensors").read_bytes() == before


def test_bad_override_is_one_line_and_exit_2(tmp_path):
    proc = run_script("train.py", "--config", "tests/configs/smoke/sum.yaml", "--set", "train.lrr=0.1")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "did you mean 'lr'" in proc.stderr
    debug = run_script("train.py", "--config", "tests/configs/smoke/sum.yaml", "--set", "train.lrr=0.1", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_two_threads_train_the_same_prompt_twice(tmp_path):
    """Bit-identical reruns (and so resumes) on 2 CPU threads: without deterministic algorithms, a
    multi-threaded CPU kernel sums in a varying order, and lr 0.1 amplifies the last-bit differences."""
    from softprompt.config import load_config
    from softprompt.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    prompts = []
    try:
        for run in ("a", "b"):
            sets = ["train.epochs=1", "train.save_every=1", "data.max_train_examples=256", "data.max_eval_examples=8"]
            cfg = load_config(
                conftest.ROOT / "configs" / "smoke" / "sum.yaml", [*sets, f"train.output_dir={tmp_path / run}"]
            )
            train(cfg, quiet=True, echo=lambda line: None, results_dir=None)
            prompts.append(load_file(tmp_path / run / cfg.run_name / "epoch_001" / "prompt.safetensors")["prompt"])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(prompts[0], prompts[1]), (prompts[0] - prompts[1]).abs().max()
