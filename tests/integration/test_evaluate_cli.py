"""scripts/evaluate.py in a subprocess on each task's smoke checkpoint (summary line, metrics.json,
predictions), the missing-checkpoint message, and loss.png.
"""

import json
import re

import matplotlib.image
import pytest

from conftest import run_script
from softprompt.config import load_config
from softprompt.plots import plot_losses
from softprompt.tasks import TASKS as task_registry

TASKS = tuple(task_registry)  # every registered task has a smoke config in tests/configs/smoke


SPLIT = {"qna": "validation", "sum": "test", "tx": "test"}  # each 10 examples in the samples (tx: carved)


SCORES = {
    "qna": r"EM \d+\.\d\d \| F1 \d+\.\d\d",
    "sum": r"ROUGE-1 \d+\.\d\d \| ROUGE-2 \d+\.\d\d \| ROUGE-L \d+\.\d\d \| ROUGE-Lsum \d+\.\d\d",
    "tx": r"BLEU \d+\.\d\d \| chrF \d+\.\d\d",
}


METRICS_KEYS = {
    "task",
    "split",
    "n",
    "scores",
    "checkpoint",
    "epoch",
    "baseline",
    "config",
    "run_name",
    "base_model",
    "decoding",
    "device",
    "generation_s",
    "examples_per_s",
    "wall_time_s",
    "versions",
    "results_dir",
    "split_size",
    "sample",
    "world_size",
}


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(smoke_overrides):
    """{task: overrides} of the session's 1-epoch smoke trainings (conftest.py)."""
    return {task: smoke_overrides for task in TASKS}


def _cfg(runs, task):
    return load_config(f"tests/configs/smoke/{task}.yaml", runs[task])


@pytest.mark.parametrize("task", TASKS)
def test_evaluate_script_end_to_end(runs, task, tmp_path):
    # qna with every default; sum and tx exercise the flags (and generate less).
    flags = {"qna": [], "sum": ["--max-new-tokens", "16", "--batch-size", "3"], "tx": ["--limit", "4"]}[task]
    sets = [a for o in runs[task] for a in ("--set", o)]
    proc = run_script(
        "evaluate.py",
        "--config",
        f"tests/configs/smoke/{task}.yaml",
        *sets,
        *flags,
        "--results-dir",
        str(tmp_path),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    n = 4 if task == "tx" else 10
    assert re.fullmatch(rf"{task} \| {SPLIT[task]} \| n={n} \| {SCORES[task]} \| checkpoint epoch_001\n", proc.stdout)
    out = tmp_path / f"smoke-{task}" / SPLIT[task]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == METRICS_KEYS
    assert metrics["n"] == n and metrics["epoch"] == 1 and metrics["baseline"] is None
    assert metrics["checkpoint"].endswith("smoke-" + task + "/epoch_001")
    assert metrics["base_model"] == "builtin:tiny-gpt2" and metrics["decoding"]["strategy"] == "greedy"
    assert metrics["versions"]["torch"] and metrics["examples_per_s"] > 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == n and all(set(r) == {"index", "source", "references", "prediction"} for r in rows)
    if task != "sum":
        assert all("\n" not in r["prediction"] for r in rows)
    if task == "sum":
        assert metrics["decoding"]["max_new_tokens"] == 16 and metrics["decoding"]["batch_size"] == 3
    if task == "tx":
        assert "signature" in metrics["scores"] and metrics["scores"]["signature"].startswith("nrefs:1")


def test_missing_checkpoint_is_one_line_naming_the_training_command(tmp_path):
    proc = run_script(
        "evaluate.py",
        "--config",
        "tests/configs/smoke/qna.yaml",
        "--set",
        f"train.output_dir={tmp_path}",
        "--results-dir",
        str(tmp_path),
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: no checkpoint in {tmp_path / 'smoke-qna'}")
    assert "python scripts/train.py --config tests/configs/smoke/qna.yaml" in lines[0]


def test_loss_png_is_a_valid_png(runs, tmp_path):
    run_dir = _cfg(runs, "qna").run_dir
    path = plot_losses(run_dir, tmp_path / "smoke-qna" / "loss.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    proc = run_script("plot_losses.py", str(run_dir), "--results-dir", str(tmp_path / "cli"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cli" / "smoke-qna" / "loss.png").read_bytes()[:8] == PNG_SIGNATURE
