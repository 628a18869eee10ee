"""evaluate.py --task all (three tasks, one frozen model, one mixed pass) and --ensemble (prompt ensembling).

Short smoke trainings (1 epoch on 8 examples) make the checkpoints: one per task, and a second qna prompt
with another seed for the ensemble. The scripts run in this process (their `main`), to save a Python start-up.
"""

import json
import re

import pytest
import torch

from softprompt.checkpoint import resolve_prompt_dir
from softprompt.config import load_config
from softprompt.errors import SoftPromptError
from softprompt.evaluate import evaluate, evaluate_all, summary_line
from softprompt.generation import DecodeOptions, mixed_batches
from softprompt.model import read_prompt
from softprompt.tasks import TASKS as task_registry
from softprompt.train import train

TASKS = tuple(task_registry)  # every registered task has a smoke config in tests/configs/smoke
SPLIT = {"qna": "validation", "sum": "test", "tx": "test"}
SEED_RUN = "smoke-qna-seed7"


@pytest.fixture(scope="module")
def overrides(smoke_overrides):
    """The session's smoke trainings (conftest.py), plus a second qna prompt with another seed beside them."""
    train(
        load_config("tests/configs/smoke/qna.yaml", [*smoke_overrides, "train.seed=7", f"run_name={SEED_RUN}"]),
        quiet=True,
        echo=lambda line: None,
        results_dir=None,
    )
    return smoke_overrides


@pytest.fixture(scope="module")
def script(evaluate_script):
    return evaluate_script


def _cfg(overrides, task, *more):
    return load_config(f"tests/configs/smoke/{task}.yaml", [*overrides, *more])


def _predictions(metrics):
    with open(f"{metrics['results_dir']}/predictions.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["prediction"] for line in f]


def test_all_tasks_in_one_pass_equal_three_separate_evaluations(overrides, script, tmp_path, capsys):
    sets = [a for o in overrides for a in ("--set", o)]
    argv = ["--task", "all", "--config-dir", "tests/configs/smoke", *sets, "--results-dir", str(tmp_path), "--quiet"]
    argv.append("--compare-speed")  # the timing of separate runs is opt-in
    assert script(*argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[:2] for line in lines[:3]] == [[t, SPLIT[t]] for t in TASKS]
    assert all(line.endswith("| checkpoint epoch_001") for line in lines[:3])
    assert re.fullmatch(
        r"speed \| 3 tasks, n=30, batch 8 \| one mixed pass [\d.]+ ex/s \| separate runs [\d.]+ ex/s"
        r" \| [\d.]+x \| 30/30 predictions equal",
        lines[3],
    ), lines[3]
    for task in TASKS:
        together = json.loads((tmp_path / f"smoke-{task}" / f"{SPLIT[task]}-all" / "metrics.json").read_text())
        alone = evaluate(_cfg(overrides, task), results_dir=tmp_path / "alone", progress=False)
        assert _predictions(together) == _predictions(alone), task
        assert together["scores"] == alone["scores"] and together["n"] == alone["n"] == 10
        assert together["checkpoint"] == alone["checkpoint"] and together["decoding"] == alone["decoding"]
        assert together["speed"]["tasks"] == list(TASKS) and together["speed"]["ratio"] > 0
    # Not vacuous: the tiny model writes something for some rows.
    assert any(_predictions(together))


def testmixed_batches_mix_tasks_only_where_every_row_has_room_for_the_longest_limit():
    # (length, limit, room): long qna rows have room for their 24 tokens only; sum and tx rows for 64.
    rows = [(228, 24, 24), (188, 64, 64), (205, 24, 47), (109, 64, 143), (93, 64, 159), (215, 24, 37)]
    batches = mixed_batches(*map(list, zip(*rows, strict=False)), batch_size=3)
    assert batches == [[0, 5, 2], [1, 3, 4]]  # longest first; qna rows wait for a batch they fit
    assert all(min(rows[i][2] for i in b) >= max(rows[i][1] for i in b) for b in batches)
    assert mixed_batches([50, 40, 30], [24, 64, 64], [200, 200, 200], 2) == [[0, 1], [2]]  # room: mixed freely


def test_an_ensemble_of_one_equals_its_checkpoint_alone(overrides, tmp_path):
    cfg = _cfg(overrides, "tx")
    alone = evaluate(cfg, results_dir=tmp_path, progress=False)
    # A run folder stands for its latest checkpoint.
    one = evaluate(cfg, ensemble=[cfg.run_dir], results_dir=tmp_path, progress=False)
    assert _predictions(one) == _predictions(alone) and any(_predictions(one))
    assert one["scores"] == alone["scores"]
    assert one["results_dir"] == str(tmp_path / "smoke-tx" / "test-ensemble")
    assert one["ensemble"] == [{"checkpoint": alone["checkpoint"], "epoch": 1, "prompt_length": 4}]
    assert summary_line(one).endswith("| ensemble of 1") and summary_line(alone).endswith("| checkpoint epoch_001")


def test_an_ensemble_of_two_seeds_runs_and_is_deterministic(overrides, script, tmp_path, capsys):
    cfg = _cfg(overrides, "qna")
    members = [cfg.run_dir / "epoch_001", cfg.run_dir.parent / SEED_RUN]
    assert not torch.equal(read_prompt(members[0])[0], read_prompt(resolve_prompt_dir(members[1]))[0])
    first = evaluate(cfg, ensemble=members, results_dir=tmp_path, progress=False)
    predictions = _predictions(first)
    assert len(predictions) == 10 and summary_line(first).endswith("| ensemble of 2")
    sets = [a for o in overrides for a in ("--set", o)]
    assert (
        script(
            "--config",
            "tests/configs/smoke/qna.yaml",
            *sets,
            "--ensemble",
            *map(str, members),
            "--results-dir",
            str(tmp_path),
            "--quiet",
        )
        == 0
    )
    assert capsys.readouterr().out == summary_line(first) + "\n"
    assert _predictions(first) == predictions  # the second run rewrote the same file with the same text


def test_ensemble_with_beam_search_and_mixed_bases_are_clear_errors(overrides, script, tmp_path, capsys):
    cfg = _cfg(overrides, "qna")
    with pytest.raises(SoftPromptError, match=r"an ensemble .* decodes greedily \(num_beams 4\)"):
        evaluate(cfg, ensemble=[cfg.run_dir], decode=DecodeOptions(num_beams=4), results_dir=tmp_path)
    other = _cfg(overrides, "sum", "model.name_or_path=gpt2")
    with pytest.raises(
        SoftPromptError,
        match=r"one frozen base model.*model.name_or_path differs "
        r"\(tests/configs/smoke/qna.yaml: builtin:tiny-gpt2, tests/configs/smoke/sum.yaml: gpt2",
    ):
        evaluate_all([cfg, other, _cfg(overrides, "tx")], results_dir=tmp_path)
    with pytest.raises(SoftPromptError, match="two configs for task 'qna'"):
        evaluate_all([cfg, cfg], results_dir=tmp_path)
    for argv, message in [
        (
            ["--config", "tests/configs/smoke/qna.yaml", "--ensemble", str(cfg.run_dir), "--num-beams", "4"],
            "--ensemble decodes greedily (the prompts' log-probabilities are averaged at each step); it cannot be "
            "combined with beam search (--num-beams 4)",
        ),
        (
            ["--task", "all", "--config-dir", "tests/configs/smoke", "--ensemble", "a", "b"],
            "--checkpoint, --baseline and --ensemble score one task",
        ),
        (["--task", "qna", "--config", "tests/configs/smoke/qna.yaml"], "give either --task"),
        (
            ["--config", "tests/configs/smoke/qna.yaml", "--config-dir", "tests/configs/smoke"],
            "--config-dir goes with --task",
        ),
    ]:
        assert script(*argv, "--results-dir", str(tmp_path)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_all_tasks_by_default_generate_once_without_timing_separate_runs(overrides, tmp_path, monkeypatch):
    # The mixed-vs-separate comparison is opt-in (--compare-speed): by default no single-task predict runs.
    from softprompt import evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "predict", lambda *a, **k: pytest.fail("separate runs were generated"))
    cfgs = [_cfg(overrides, t) for t in TASKS]
    results = evaluate_all(cfgs, limit=2, decode=DecodeOptions(max_new_tokens=2), results_dir=tmp_path, progress=False)
    assert list(results) == list(TASKS) and all(m["n"] == 2 for m in results.values())
    speed = results["qna"]["speed"]
    assert speed["n"] == 6 and speed["separate_s"] is None and speed["ratio"] is None
    assert all((tmp_path / f"smoke-{t}" / f"{SPLIT[t]}-all" / "metrics.json").is_file() for t in TASKS)
