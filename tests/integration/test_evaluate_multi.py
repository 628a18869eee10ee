"""evaluate.py over several tasks (every registered task, one frozen model, one mixed pass), --task all, --ensemble
(prompt ensembling), and the evaluation speed benchmark (benchmarks/eval_speed.py).

Short smoke trainings (1 epoch on 8 examples) make the checkpoints: one per task, and a second qna prompt
with another seed for the ensemble. The scripts run in this process (their `main`), to save a Python start-up.
The task list comes from the registry (conftest.TASK_NAMES), so a task added there is scored here too.
"""

import json
import re

import pytest
import torch

from benchmarks.eval_speed import compare_speed, speed_line
from conftest import TASK_NAMES, quotient_of_rounded, smoke_config
from softprompt.checkpoint import resolve_prompt_dir
from softprompt.config import configs_by_task, load_config
from softprompt.errors import SoftPromptError
from softprompt.evaluate import Prompting, evaluate, evaluate_all, summary_line
from softprompt.generation import DecodeOptions, mixed_batches
from softprompt.model import read_prompt
from softprompt.train import train

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
    return load_config(smoke_config(task), [*overrides, *more])


def _split(cfg):
    """The split a task is scored on by default: the config's data.eval_split, else its task's."""
    return cfg.data.eval_split or cfg.task.eval_split


def _predictions(metrics):
    with open(f"{metrics['results_dir']}/predictions.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["prediction"] for line in f]


def test_all_tasks_in_one_pass_equal_separate_evaluations(overrides, script, tmp_path, capsys):
    sets = [a for o in overrides for a in ("--set", o)]
    configs = [a for t in TASK_NAMES for a in ("--config", str(smoke_config(t)))]  # every registered task
    assert script(*configs, *sets, "--results-dir", str(tmp_path), "--quiet") == 0
    lines = capsys.readouterr().out.splitlines()
    cfgs = {t: _cfg(overrides, t) for t in TASK_NAMES}
    assert len(lines) == len(TASK_NAMES) + 1
    assert [line.split(" | ")[:2] for line in lines[:-1]] == [[t, _split(c)] for t, c in cfgs.items()]
    assert all(line.endswith("| checkpoint epoch_001") for line in lines[:-1])
    alone = {t: evaluate(c, results_dir=tmp_path / "alone", progress=False) for t, c in cfgs.items()}
    n, batch = sum(m["n"] for m in alone.values()), min(c.train.eval_batch_size for c in cfgs.values())
    # The pass's own rate only: the comparison with separate runs is a benchmark (test_eval_speed_benchmark).
    assert re.fullmatch(rf"speed \| {len(cfgs)} tasks, n={n}, batch {batch} \| one mixed pass [\d.]+ ex/s", lines[-1])
    for task, cfg in cfgs.items():
        together = json.loads((tmp_path / cfg.run_name / f"{_split(cfg)}-all" / "metrics.json").read_text())
        assert _predictions(together) == _predictions(alone[task]), task
        assert together["scores"] == alone[task]["scores"] and together["n"] == alone[task]["n"] > 0
        assert together["checkpoint"] == alone[task]["checkpoint"] and together["decoding"] == alone[task]["decoding"]
        speed = together["speed"]
        assert speed["tasks"] == list(TASK_NAMES) and speed["n"] == n and speed["batch_size"] == batch
        assert speed["mixed_s"] == together["generation_s"] and speed["separate_s"] is speed["ratio"] is None
        assert quotient_of_rounded(together["examples_per_s"], n, together["generation_s"])
    # Not vacuous: the tiny model writes something for some rows.
    assert any(p for m in alone.values() for p in _predictions(m))


def test_task_all_takes_every_config_in_the_folder_by_its_task_key(overrides, script, tmp_path, capsys):
    found = configs_by_task("tests/configs/smoke")
    assert all(load_config(path).task.name == task for task, path in found.items())
    sets = [a for o in overrides for a in ("--set", o)]
    argv = ["--task", "all", "--config-dir", "tests/configs/smoke", "--limit", "1", "--max-new-tokens", "1", *sets]
    assert script(*argv, "--results-dir", str(tmp_path), "--quiet") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in lines[:-1]] == list(found)
    assert re.fullmatch(
        rf"speed \| {len(found)} tasks, n={len(found)}, batch \d+ \| one mixed pass [\d.]+ ex/s", lines[-1]
    )


def test_eval_speed_benchmark_times_one_pass_against_separate_runs(overrides, tmp_path):
    cfgs = [_cfg(overrides, t) for t in TASK_NAMES]
    record = compare_speed(cfgs, limit=3, decode=DecodeOptions(batch_size=4, max_new_tokens=3))
    n = 3 * len(cfgs)
    assert record["tasks"] == list(TASK_NAMES) and record["n"] == n and record["batch_size"] == 4
    assert record["separate_equal"] == n  # the separate runs reproduce every prediction of the mixed pass
    assert quotient_of_rounded(record["ratio"], record["separate_s"], record["mixed_s"])
    assert quotient_of_rounded(record["mixed_examples_per_s"], n, record["mixed_s"])
    assert speed_line(record).endswith(f"x | {n}/{n} predictions equal")


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
    one = evaluate(cfg, Prompting.ensemble([cfg.run_dir]), results_dir=tmp_path, progress=False)
    assert _predictions(one) == _predictions(alone) and any(_predictions(one))
    assert one["scores"] == alone["scores"]
    assert one["results_dir"] == str(tmp_path / "smoke-tx" / "test-ensemble")
    assert one["ensemble"] == [{"checkpoint": alone["checkpoint"], "epoch": 1, "prompt_length": 4}]
    assert summary_line(one).endswith("| ensemble of 1") and summary_line(alone).endswith("| checkpoint epoch_001")


def test_an_ensemble_of_two_seeds_runs_and_is_deterministic(overrides, script, tmp_path, capsys):
    cfg = _cfg(overrides, "qna")
    members = [cfg.run_dir / "epoch_001", cfg.run_dir.parent / SEED_RUN]
    assert not torch.equal(read_prompt(members[0])[0], read_prompt(resolve_prompt_dir(members[1]))[0])
    first = evaluate(cfg, Prompting.ensemble(members), results_dir=tmp_path, progress=False)
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
    with pytest.raises(SoftPromptError, match=r"an ensemble decodes greedily, not with num_beams 4"):
        evaluate(cfg, Prompting.ensemble([cfg.run_dir]), decode=DecodeOptions(num_beams=4), results_dir=tmp_path)
    other = _cfg(overrides, "sum", "model.name_or_path=gpt2")
    with pytest.raises(
        SoftPromptError,
        match=r"one frozen base model.*model.name_or_path differs "
        r"\(\S*tests/configs/smoke/qna.yaml: builtin:tiny-gpt2, \S*tests/configs/smoke/sum.yaml: gpt2",
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


def test_all_tasks_generate_once_in_the_mixed_pass(overrides, tmp_path, monkeypatch):
    # No single-task predict runs beside the mixed pass (timing separate runs is the benchmark's job).
    from softprompt import evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "predict", lambda *a, **k: pytest.fail("separate runs were generated"))
    cfgs = [_cfg(overrides, t) for t in TASK_NAMES]
    results = evaluate_all(cfgs, limit=2, decode=DecodeOptions(max_new_tokens=2), results_dir=tmp_path, progress=False)
    assert list(results) == list(TASK_NAMES) and all(m["n"] == 2 for m in results.values())
    speed = results["qna"]["speed"]
    assert speed["n"] == 2 * len(cfgs) and speed["separate_s"] is None and speed["ratio"] is None
    assert all((tmp_path / c.run_name / f"{_split(c)}-all" / "metrics.json").is_file() for c in cfgs)
