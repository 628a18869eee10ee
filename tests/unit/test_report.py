"""scripts/report.py: one table per task, the bar chart's numbers, loss curves, and notes for what is missing.

Fixtures are hand-written metrics.json and log.jsonl files in the layout evaluate and train write; every
expected value below is typed from those fixtures, not computed by the code under test.
"""

import importlib.util
import json
import os
from datetime import datetime, timezone

import matplotlib.image
import pytest

from conftest import ROOT
from softprompt.cli import run_cli
from softprompt.errors import SoftPromptError
from softprompt.report import bar_groups, collect, headline_scores, split_and_variant, write_report

WHEN = datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc).timestamp()  # every fixture's mtime: a known date


def metrics(task, split, scores, n=10, checkpoint="/x/checkpoints/run/epoch_010", baseline=None, **extra):
    return {
        "task": task,
        "split": split,
        "n": n,
        "scores": scores,
        "checkpoint": checkpoint,
        "baseline": baseline,
        "base_model": "builtin:tiny-tasks",
        **extra,
    }


def put(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    os.utime(path, (WHEN, WHEN))
    return path


def log_lines(*epochs):
    """log.jsonl with a step record and one epoch record per (train, val) pair."""
    lines = [{"type": "step", "epoch": 0, "step": 0, "global_step": 1, "loss": 9.0}]
    lines += [
        {"type": "epoch", "epoch": i + 1, "global_step": 5 * (i + 1), "train_loss": t, "val_loss": v}
        for i, (t, v) in enumerate(epochs)
    ]
    return "".join(json.dumps(r) + "\n" for r in lines)


QNA = {"exact_match": 40.0, "f1": 55.5}
SUM = {"rouge1": 30.0, "rouge2": 10.0, "rougeL": 25.0, "rougeLsum": 26.0}


@pytest.fixture
def tree(tmp_path):
    """results/ and checkpoints/ holding complete, partial and broken runs."""
    res, ckpt = tmp_path / "results", tmp_path / "checkpoints"
    qna = res / "smoke-qna"
    put(qna / "validation" / "metrics.json", json.dumps(metrics("qna", "validation", QNA)))
    put(
        qna / "validation-baseline-hard" / "metrics.json",
        json.dumps(metrics("qna", "validation", {"exact_match": 5.0, "f1": 12.25}, checkpoint=None, baseline="hard")),
    )
    put(
        qna / "validation-baseline-text" / "metrics.json",
        json.dumps(metrics("qna", "validation", {"exact_match": 60.0, "f1": 70.0}, checkpoint=None, baseline="text")),
    )
    put(
        qna / "validation-ensemble" / "metrics.json",
        json.dumps(metrics("qna", "validation", QNA, ensemble=[{"checkpoint": "a"}, {"checkpoint": "b"}])),
    )
    put(qna / "validation-all" / "metrics.json", json.dumps(metrics("qna", "validation", QNA, n=30)))
    put(qna / "loss.png", "not read")
    put(ckpt / "smoke-qna" / "log.jsonl", log_lines((5.0, 5.5), (4.0, 4.75)))

    put(res / "smoke-sum" / "test" / "metrics.json", json.dumps(metrics("sum", "test", {**SUM, "signature": "x"})))
    put(
        res / "smoke-sum" / "test-baseline-none" / "metrics.json",
        json.dumps(metrics("sum", "test", {**SUM, "rougeL": 3.5}, checkpoint=None, baseline="none")),
    )
    put(res / "smoke-sum" / "validation" / "predictions.jsonl", "{}\n")  # killed before metrics.json
    put(res / "smoke-sum" / "broken" / "metrics.json", '{"task": "sum", "scores": {')
    put(ckpt / "smoke-sum" / "log.jsonl", log_lines((3.0, 3.25)) + '{"type": "epoch", "ep')  # a cut last line

    put(ckpt / "smoke-tx" / "log.jsonl", log_lines((2.0, 2.5)))  # trained, never evaluated
    put(ckpt / "smoke-tx" / "epoch_001" / "prompt.json", "{}")
    return res, ckpt


def test_every_evaluation_is_one_row_and_each_gap_a_note(tree):
    res, ckpt = tree
    report = collect(None, res, ckpt)
    rows = {(r.run, r.split, r.variant): r for r in report.rows}
    assert list(rows) == [  # by task, run, split; tuned first, then baselines, ensemble, all
        ("smoke-qna", "validation", "tuned"),
        ("smoke-qna", "validation", "baseline-hard"),
        ("smoke-qna", "validation", "baseline-text"),
        ("smoke-qna", "validation", "ensemble"),
        ("smoke-qna", "validation", "all"),
        ("smoke-sum", "test", "tuned"),
        ("smoke-sum", "test", "baseline-none"),
    ]
    tuned = rows["smoke-qna", "validation", "tuned"]
    assert tuned.scores == {"exact_match": 40.0, "f1": 55.5} and tuned.checkpoint == "epoch_010" and tuned.n == 10
    assert tuned.base_model == "builtin:tiny-tasks" and tuned.date == "2026-11-20 09:30 UTC"
    assert rows["smoke-qna", "validation", "baseline-hard"].checkpoint == "—"
    assert rows["smoke-qna", "validation", "ensemble"].checkpoint == "2 prompts"
    assert rows["smoke-qna", "validation", "all"].n == 30
    assert list(rows["smoke-sum", "test", "tuned"].scores) == ["rouge1", "rouge2", "rougeL", "rougeLsum"]

    assert [(c.run, c.epochs, c.train, c.val) for c in report.curves] == [
        ("smoke-qna", [1, 2], [5.0, 4.0], [5.5, 4.75]),
        ("smoke-tx", [1], [2.0], [2.5]),
    ]
    notes = "\n".join(report.notes)
    assert len(report.notes) == 4, notes
    assert "smoke-sum: " in notes and "validation has no metrics.json" in notes
    assert "broken/metrics.json is not readable JSON" in notes
    assert "smoke-sum: no loss curve: " in notes and "log.jsonl, line 3: not valid JSON" in notes
    assert "smoke-tx: trained but not evaluated" in notes


def test_report_files_hold_the_tables_the_chart_and_the_notes(tree):
    res, ckpt = tree
    write_report(None, res, ckpt, command="python scripts/report.py")
    md = (res / "report.md").read_text(encoding="utf-8")
    assert "| run | split | variant | EM | F1 | checkpoint | n | base model | date |" in md
    tuned_row = "| smoke-qna | validation | tuned | 40.00 | 55.50 | epoch_010 | 10 | builtin:tiny-tasks |"
    assert f"{tuned_row} 2026-11-20 09:30 UTC |" in md
    assert "| smoke-qna | validation | baseline-hard | 5.00 | 12.25 | — | 10 |" in md
    assert "| run | split | variant | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | checkpoint |" in md
    assert "| smoke-sum | test | baseline-none | 30.00 | 10.00 | 3.50 | 26.00 | — |" in md
    assert "## Notes" in md and "- smoke-tx: trained but not evaluated" in md and "](report.png)" in md
    image = matplotlib.image.imread(res / "report.png")
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 400


def test_the_bar_chart_sets_tuned_against_baselines_on_the_task_headline(tree):
    res, ckpt = tree
    bars = bar_groups(collect(None, res, ckpt).rows)
    assert bars == {  # Task.headline: EM for qna, ROUGE-L for sum; ensembles and --task all passes left out
        "qna": (
            "exact_match",
            {"smoke-qna / validation": {"tuned": 40.0, "baseline-hard": 5.0, "baseline-text": 60.0}},
        ),
        "sum": ("rougeL", {"smoke-sum / test": {"tuned": 25.0, "baseline-none": 3.5}}),
    }


def test_named_runs_only_and_a_wrong_name_is_a_note(tree):
    res, ckpt = tree
    report = collect(["smoke-tx", str(res / "smoke-sum"), "smoke-qan"], res, ckpt)
    assert {r.run for r in report.rows} == {"smoke-sum"} and [c.run for c in report.curves] == ["smoke-tx"]
    assert any(n.startswith("smoke-qan: no ") and "is the name right?" in n for n in report.notes)


@pytest.mark.parametrize(
    "folder, expected",
    [
        ("validation", ("validation", "tuned")),
        ("test-baseline-hard", ("test", "baseline-hard")),
        ("test-baseline-text", ("test", "baseline-text")),
        ("validation-ensemble", ("validation", "ensemble")),
        ("test-all", ("test", "all")),
    ],
)
def test_folder_names_give_split_and_variant(folder, expected):
    assert split_and_variant(folder) == expected


def test_headline_metrics_fall_back_to_every_numeric_score():
    assert headline_scores("qna", {"f1": 2, "exact_match": 1, "extra": 3}) == {"exact_match": 1.0, "f1": 2.0}
    assert headline_scores("newtask", {"acc": 0.5, "name": "x", "ok": True, "n": 3}) == {"acc": 0.5, "n": 3.0}
    assert headline_scores("tx", {"bleu": 1.0}) == {"bleu": 1.0}  # chrF missing: every numeric score instead


@pytest.fixture
def script():
    spec = importlib.util.spec_from_file_location("report_script", ROOT / "scripts" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda *argv: run_cli(module.main, list(argv))


def test_no_runs_is_one_error_line_and_exit_2(tmp_path, script, capsys):
    (tmp_path / "results").mkdir()
    code = script("--results-dir", str(tmp_path / "results"), "--checkpoints-dir", str(tmp_path / "nothing"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: no runs to report: neither ")
    with pytest.raises(SoftPromptError, match="nothing to report"):
        collect(["ghost"], tmp_path / "results", tmp_path / "nothing")


def test_the_script_writes_both_files_and_prints_the_notes(tree, tmp_path, script, capsys):
    res, ckpt = tree
    code = script("--results-dir", str(res), "--checkpoints-dir", str(ckpt), "--out", str(tmp_path / "out"))
    out = capsys.readouterr()
    assert code == 0 and out.out.startswith("7 evaluation(s), 2 loss curve(s): ")
    assert out.err.count("note: ") == 4
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# Report across runs") and "python scripts/report.py --results-dir" in md
    assert (tmp_path / "out" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
