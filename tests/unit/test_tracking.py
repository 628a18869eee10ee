"""train.tracker: tensorboard, read back with TensorBoard's own reader and checked against log.jsonl."""

import builtins
import json
import math
import os

import pytest
import torch

from conftest import ROOT
from softprompt.config import load_config
from softprompt.errors import SoftPromptError
from softprompt.evaluate import Prompting, evaluate
from softprompt.tracking import add_scalars
from softprompt.train import train

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

RUN = "smoke-qna"
SETS = [
    "train.epochs=3",
    "train.save_every=1",
    "train.log_every=2",
    "data.max_train_examples=12",
    "data.max_eval_examples=4",
    "data.max_source_tokens=64",
    "train.tracker=tensorboard",
]


def train_here(out, *overrides, resume=False):
    cfg = load_config(ROOT / "tests" / "configs" / "smoke" / "qna.yaml", [*SETS, f"train.output_dir={out}", *overrides])
    return train(cfg, resume=resume, quiet=True, echo=lambda line: None, results_dir=out / "results")


def scalars(out):
    """{tag: [(step, value), ...]} as TensorBoard shows them (orphaned points of a resumed run purged)."""
    acc = EventAccumulator(str(out / "results" / RUN / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def f32(x):
    return torch.tensor(x, dtype=torch.float32).item()  # event files hold float32


def records(out):
    return [json.loads(line) for line in (out / RUN / "log.jsonl").read_text().splitlines()]


def assert_matches_log(out):
    got, log = scalars(out), records(out)
    steps = [r for r in log if r["type"] == "step"]
    epochs = [r for r in log if r["type"] == "epoch"]
    assert len(steps) == 9 and len(epochs) == 3  # 3 epochs x micro-batches 0, 2, 4
    # grad_accum_steps 1: each step line's micro-batch is an optimizer step, logged at log.jsonl's global_step
    assert got["train/loss"] == [(r["global_step"], f32(r["loss"])) for r in steps]
    assert got["train/loss_window"] == [(r["global_step"], f32(r["window_loss"])) for r in steps]
    assert got["train/lr"] == [(r["global_step"], f32(r["lr"])) for r in steps]
    assert got["epoch/train_loss"] == [(r["global_step"], f32(r["train_loss"])) for r in epochs]
    assert got["epoch/val_loss"] == [(r["global_step"], f32(r["val_loss"])) for r in epochs]
    for tag in ("train/grad_norm", "train/tokens_per_sec"):
        assert [s for s, _ in got[tag]] == [r["global_step"] for r in steps]
        assert all(math.isfinite(v) and v > 0 for _, v in got[tag])


def test_tensorboard_scalars_match_the_log(tmp_path):
    train_here(tmp_path)
    assert_matches_log(tmp_path)


def test_resumed_run_has_each_point_once(tmp_path, monkeypatch):
    # A NaN at epoch 3's 4th micro-batch (batches counted over training and evaluation: 6 + 1 per epoch) stops
    # the run after it logged epoch 3's steps 0 and 2, past its last checkpoint (epoch_002); --resume writes
    # them again, and TensorBoard's reader must show each point once.
    monkeypatch.setenv("SOFTPROMPT_TEST_NAN_BATCH", "18")
    with pytest.raises(SoftPromptError, match="NaN"):
        train_here(tmp_path)
    assert [r["step"] for r in records(tmp_path) if r["type"] == "step" and r["epoch"] == 2] == [0, 2]
    monkeypatch.delenv("SOFTPROMPT_TEST_NAN_BATCH")
    train_here(tmp_path, resume=True)
    assert_matches_log(tmp_path)


def test_evaluation_adds_its_metrics_to_the_run(tmp_path):
    train_here(tmp_path)
    cfg = load_config(ROOT / "tests" / "configs" / "smoke" / "qna.yaml", [*SETS, f"train.output_dir={tmp_path}"])
    metrics = evaluate(cfg, limit=3, results_dir=tmp_path / "results", progress=False)
    baseline = evaluate(cfg, Prompting.baseline("none"), limit=3, results_dir=tmp_path / "results", progress=False)
    got = scalars(tmp_path)
    split = metrics["split"]
    # At the checkpoint's optimizer step: 3 epochs of 12 examples in batches of the config's size.
    step = records(tmp_path)[-1]["global_step"]
    assert got[f"eval/{split}/f1"] == [(step, f32(metrics["scores"]["f1"]))]
    assert got[f"eval/{split}/exact_match"] == [(step, f32(metrics["scores"]["exact_match"]))]
    assert got[f"eval/{split}-baseline-none/f1"] == [(0, f32(baseline["scores"]["f1"]))]
    assert_matches_log(tmp_path)  # training's points untouched


def test_add_scalars_writes_at_the_step_given(tmp_path):
    train_here(tmp_path)
    add_scalars(tmp_path / "results" / RUN, {"eval/test/f1": 0.25}, step=18)
    assert scalars(tmp_path)["eval/test/f1"] == [(18, 0.25)]
    assert_matches_log(tmp_path)


def test_tracker_without_the_package_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("tensorboard", "torch.utils.tensorboard")):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(SoftPromptError) as info:
        train_here(tmp_path)
    assert "pip install 'softprompt[tensorboard]'" in str(info.value) and "\n" not in str(info.value)
    assert not os.path.exists(tmp_path / RUN)  # refused before anything was written


def test_tracker_none_writes_no_events(tmp_path):
    train_here(tmp_path, "train.tracker=none")
    assert not (tmp_path / "results" / RUN / "tensorboard").exists()
