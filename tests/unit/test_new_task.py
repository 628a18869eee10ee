"""A fourth task, defined outside the package, runs through everything the three shipped tasks do.

The task ("reverse": say the words in reverse order, scored by its own word accuracy and the package's
strict exact match) lives in tests/fixtures/reverse/ with its smoke config and data, and nowhere else.
It is put into the one task registry, softprompt.tasks.TASKS, for the test's duration. Everything else
(config loading, data checks, training, generation, scoring, the summary line, the script's --task
choices) must read it from there. The integration tier then runs the suite's task-parametrised tests
on it (tests/integration/test_new_task_suite.py).
"""

import importlib.util
import json

import pytest

from conftest import ROOT, script_cli
from softprompt import tasks
from softprompt.config import ConfigError, load_config
from softprompt.errors import SoftPromptError
from softprompt.evaluate import evaluate, summary_line
from softprompt.train import train

FIXTURE = ROOT / "tests" / "fixtures" / "reverse" / "task.py"


def _fixture_module():
    spec = importlib.util.spec_from_file_location("reverse_task", FIXTURE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REVERSE = _fixture_module()


@pytest.fixture
def reverse_task(monkeypatch):
    if tasks.TASKS.get("reverse") is not REVERSE.TASK:  # unless SOFTPROMPT_TEST_TASK registered it already
        monkeypatch.setitem(tasks.TASKS, "reverse", REVERSE.TASK)
    return REVERSE.TASK


def test_the_task_s_own_metric_is_not_squad_s():
    # SQuAD's normalised exact match forgives word order and articles; the task's metrics do not.
    assert REVERSE.TASK.score(["the a cat"], [["cat a the"]]) == {"exact": 0.0, "word_accuracy": 100 / 3}
    assert REVERSE.TASK.score(["cat a the", "dog"], [["cat a the"], ["dog sun"]]) == {
        "exact": 50.0,
        "word_accuracy": 100 * 4 / 5,
    }
    assert REVERSE.TASK.headline == ("exact", "Exact")  # the first of its metrics, by default
    assert REVERSE.TASK.dataset is None  # a local-only task needs no Hub id


def test_a_fourth_task_trains_evaluates_and_prints_its_summary_line(reverse_task, tmp_path, capsys):
    config = REVERSE.SMOKE_CONFIG
    cfg = load_config(config, [f"train.output_dir={tmp_path / 'ckpt'}", "train.epochs=1", "train.save_every=1"])
    assert cfg.task is reverse_task and cfg.model.init_text == "reverse order words back"  # the task's init words
    run_dir = train(cfg, quiet=True, echo=lambda line: None, results_dir=None)
    assert (run_dir / "epoch_001" / "prompt.safetensors").is_file()

    metrics = evaluate(cfg, results_dir=tmp_path / "results", progress=False)
    out = tmp_path / "results" / cfg.run_name / "test"
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    test_records = [json.loads(line) for line in (config.parent / "test.jsonl").read_text().splitlines()]
    assert [r["references"] for r in rows] == [[" ".join(reversed(r["words"].split()))] for r in test_records]
    # The scores are the task's own metric, recomputed here from the written predictions.
    predictions, references = [r["prediction"] for r in rows], [r["references"][0] for r in rows]
    expected = {
        "exact": 100.0 * sum(p == r for p, r in zip(predictions, references, strict=True)) / len(rows),
        "word_accuracy": REVERSE.word_accuracy(predictions, references),
    }
    assert metrics["scores"] == pytest.approx(expected, abs=1e-9) and metrics["n"] == 10
    assert metrics["decoding"]["max_new_tokens"] == 12 and metrics["decoding"]["stop_at_newline"] is True
    line = f"reverse | test | n=10 | Exact {expected['exact']:.2f} | WordAcc {expected['word_accuracy']:.2f}"
    assert summary_line(metrics) == f"{line} | checkpoint epoch_001"

    # The script knows the task from the registry too (its summary line, its --task choices).
    evaluate_script = script_cli("evaluate.py")
    argv = ["--config", str(config), "--baseline", "hard", "--results-dir", str(tmp_path / "results")]
    assert evaluate_script(*argv, "--set", f"train.output_dir={tmp_path / 'ckpt'}", "--quiet") == 0
    assert capsys.readouterr().out.startswith("reverse | test | n=10 | Exact ")


def test_an_unknown_task_fails_naming_the_registry_before_anything_is_written(reverse_task, monkeypatch):
    listed = ", ".join(tasks.TASKS)
    assert "reverse" in listed
    with pytest.raises(ConfigError, match=rf"task must be one of {listed}, got 'gone'"):
        load_config(REVERSE.SMOKE_CONFIG, ["task=gone"])
    with pytest.raises(SoftPromptError, match=rf"unknown task 'gone'; tasks are {listed}$"):
        summary_line({"task": "gone", "scores": {}})
    # The messages follow the registry: without the fourth task they list one fewer.
    monkeypatch.delitem(tasks.TASKS, "reverse")
    with pytest.raises(SoftPromptError, match=f"tasks are {', '.join(tasks.TASKS)}$"):
        tasks.get_task("reverse")
