"""scripts/evaluate.py in a subprocess on each task's smoke checkpoint (summary line, metrics.json,
predictions), the missing-checkpoint message, and loss.png.
"""

import json
import re

import matplotlib.image
import pytest
import torch

from conftest import TASK_NAMES, quotient_of_rounded, run_script, smoke_config
from softprompt.config import load_config
from softprompt.plots import plot_losses

TASKS = TASK_NAMES  # every registered task, the extra one (SOFTPROMPT_TEST_TASK) included


def _scores(task) -> str:
    """The summary line's scores as a pattern, from the task's own metric labels: `EM 12.50 | F1 20.00`."""
    return r" \| ".join(rf"{re.escape(label)} \d+\.\d\d" for _, label in task.metrics)


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
    return load_config(smoke_config(task), runs[task])


@pytest.mark.parametrize("task", TASKS)
def test_evaluate_script_end_to_end(runs, task, tmp_path):
    # qna with every default; sum exercises the decoding flags, the other tasks --limit (and generate less).
    flags = {"qna": [], "sum": ["--max-new-tokens", "16", "--batch-size", "3"]}.get(task, ["--limit", "4"])
    sets = [a for o in runs[task] for a in ("--set", o)]
    cfg = _cfg(runs, task)
    split = cfg.data.eval_split or cfg.task.eval_split
    proc = run_script(
        "evaluate.py",
        "--config",
        str(smoke_config(task)),
        *sets,
        *flags,
        "--results-dir",
        str(tmp_path),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / cfg.run_name / split
    metrics = json.loads((out / "metrics.json").read_text())
    n = 4 if "--limit" in flags else metrics["split_size"]
    assert re.fullmatch(rf"{task} \| {split} \| n={n} \| {_scores(cfg.task)} \| checkpoint epoch_001\n", proc.stdout)
    assert set(metrics) == METRICS_KEYS
    assert metrics["n"] == n and metrics["epoch"] == 1 and metrics["baseline"] is None
    assert metrics["checkpoint"].endswith(f"{cfg.run_name}/epoch_001")
    assert metrics["base_model"] == "builtin:tiny-gpt2" and metrics["decoding"]["strategy"] == "greedy"
    assert metrics["versions"]["torch"] == torch.__version__ and metrics["world_size"] == 1
    # The rate is the examples generated over the generation time (both as recorded, the time rounded to 1 ms).
    assert quotient_of_rounded(metrics["examples_per_s"], n, metrics["generation_s"])
    assert 0 < metrics["generation_s"] <= metrics["wall_time_s"]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == n and all(set(r) == {"index", "source", "references", "prediction"} for r in rows)
    if cfg.task.stop_at_newline:
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
