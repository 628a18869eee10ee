"""A fourth task defined here alone runs train -> evaluate -> summary line, touching no other module.

The task ("caps": name the capital of a country, scored by exact accuracy) exists only in this test: it is
put into the one task registry, softprompt.tasks.TASKS, for the test's duration. Everything else (config
loading, data checks, training, generation, scoring, the summary line, the script's --task choices) must
read it from there.
"""

import importlib.util
import json

import pytest

from conftest import ROOT
from softprompt import tasks
from softprompt.config import ConfigError, load_config
from softprompt.errors import SoftPromptError, run_cli
from softprompt.evaluate import evaluate, summary_line
from softprompt.train import train

CAPITALS = {
    "France": "Paris",
    "Spain": "Madrid",
    "Italy": "Rome",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Cuba": "Havana",
    "Kenya": "Nairobi",
    "Japan": "Tokyo",
    "Egypt": "Cairo",
    "Ghana": "Accra",
    "Nepal": "Kathmandu",
    "Iran": "Tehran",
}


def accuracy(predictions: list[str], references: list[str]) -> dict[str, float]:
    return {"accuracy": 100.0 * sum(p == r for p, r in zip(predictions, references, strict=True)) / len(predictions)}


CAPS = tasks.Task(
    name="caps",
    dataset="none/offline-only",
    dataset_config=None,
    eval_split="validation",
    init_words="capital city country name",
    required=("country", "capital"),
    pieces=lambda r: ("Country: ", r["country"], "\nCapital:"),
    target=lambda r: " " + r["capital"],
    references=lambda r: [r["capital"]],
    stop_at_newline=True,
    metric=accuracy,
    multi_reference=False,
    metrics=(("accuracy", "Acc"),),
    headline=("accuracy", "Acc"),
)


@pytest.fixture
def caps_task(monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "caps", CAPS)
    return CAPS


@pytest.fixture
def caps_config(tmp_path):
    rows = [{"country": c, "capital": k} for c, k in CAPITALS.items()]
    for name, part in (("train", rows[:8]), ("validation", rows[8:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
    (tmp_path / "caps.yaml").write_text(
        "task: caps\nmodel:\n  name_or_path: builtin:tiny-gpt2\n"
        "data:\n  files:\n    train: train.jsonl\n    validation: validation.jsonl\n  max_target_tokens: 6\n"
        "train:\n  lr: 0.3\n  batch_size: 2\n  epochs: 1\n  save_every: 1\n  seed: 0\n  output_dir: ckpt\n",
        encoding="utf-8",
    )
    return tmp_path / "caps.yaml"


def test_a_fourth_task_trains_evaluates_and_prints_its_summary_line(caps_task, caps_config, tmp_path, capsys):
    cfg = load_config(caps_config)
    assert cfg.model.init_text == "capital city country name"  # the task's init words, as for the real tasks
    run_dir = train(cfg, quiet=True, echo=lambda line: None, results_dir=None)
    assert (run_dir / "epoch_001" / "prompt.safetensors").is_file()

    metrics = evaluate(cfg, results_dir=tmp_path / "results", progress=False)
    out = tmp_path / "results" / "caps" / "validation"
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["references"] for r in rows] == [[k] for k in list(CAPITALS.values())[8:]]
    # The score is the task's own metric, recomputed here from the written predictions.
    expected = 100.0 * sum(r["prediction"] == r["references"][0] for r in rows) / 4
    assert metrics["scores"] == {"accuracy": expected} and metrics["n"] == 4
    assert metrics["decoding"]["max_new_tokens"] == 6 and metrics["decoding"]["stop_at_newline"] is True
    assert summary_line(metrics) == f"caps | validation | n=4 | Acc {expected:.2f} | checkpoint epoch_001"

    # The script knows the task from the registry too (its --task choices, its summary line).
    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--config", str(caps_config), "--baseline", "hard", "--results-dir", str(tmp_path / "results")]
    assert run_cli(script.main, [*argv, "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("caps | validation | n=4 | Acc ")
    assert "caps" in script.parse(["--task", "caps"]).task


def test_an_unknown_task_fails_naming_the_registry_before_anything_is_written(caps_task, caps_config, tmp_path):
    listed = ", ".join(tasks.TASKS)
    assert listed.endswith(", caps")
    with pytest.raises(ConfigError, match=rf"task must be one of {listed}, got 'gone'"):
        load_config(caps_config, ["task=gone"])
    with pytest.raises(SoftPromptError, match=rf"unknown task 'gone'; tasks are {listed}$"):
        summary_line({"task": "gone", "scores": {}})
    # The messages follow the registry: without the fourth task they list three.
    del tasks.TASKS["caps"]
    with pytest.raises(SoftPromptError, match=f"tasks are {', '.join(tasks.TASKS)}$"):
        tasks.get_task("caps")
