"""generate.py and its library (softprompt.generate): the same predictions as evaluation, inputs as records or
texts, seeded sampling, and `--set data.files.SPLIT=PATH` (in process, on the session's smoke prompts)."""

import io
import json
from pathlib import Path

import pytest

from conftest import TASK_NAMES, script_cli, smoke_config
from softprompt.config import load_config
from softprompt.data import load_raw
from softprompt.errors import ConfigError, SoftPromptError
from softprompt.evaluate import Prompting, evaluate
from softprompt.generate import Generator, Sampling, as_record, source_fields
from softprompt.tasks import get_task


@pytest.fixture(scope="module")
def generate_script():
    return script_cli("generate.py")


def _cfg(task, smoke_overrides, *more):
    return load_config(smoke_config(task), [*smoke_overrides, *more])


def _split_records(cfg, split):
    return list(load_raw(cfg, (split,), cap_eval=False)[split])


@pytest.mark.parametrize("task", TASK_NAMES)
def test_generate_gives_evaluations_prediction_for_each_record(task, smoke_overrides, tmp_path):
    cfg = _cfg(task, smoke_overrides)
    metrics = evaluate(cfg, results_dir=tmp_path, progress=False)
    rows = [json.loads(l) for l in (Path(metrics["results_dir"]) / "predictions.jsonl").open()]
    records = _split_records(cfg, metrics["split"])
    expected = [r["prediction"] for r in rows]
    assert len(set(expected)) > 1  # the smoke prompt says different things for different records
    gen = Generator.load(cfg)
    assert gen.predict(records, batch_size=3) == expected  # batched otherwise than evaluation's batches
    assert [gen.predict([r])[0] for r in records[:3]] == expected[:3]  # and each one alone


def test_a_baseline_gives_evaluations_baseline_prediction(smoke_overrides, tmp_path):
    cfg = _cfg("sum", smoke_overrides)
    metrics = evaluate(cfg, Prompting.baseline("hard"), results_dir=tmp_path, progress=False)
    rows = [json.loads(l) for l in (Path(metrics["results_dir"]) / "predictions.jsonl").open()]
    gen = Generator.load(cfg, baseline="hard")
    assert gen.predict(_split_records(cfg, metrics["split"])) == [r["prediction"] for r in rows]


def test_a_text_fills_the_tasks_body_field():
    assert source_fields(get_task("qna")) == (("context", "question"), "context")
    assert source_fields(get_task("tx")) == (("translation.bg",), "translation.bg")
    assert as_record(get_task("tx"), "Здравей") == {"translation": {"bg": "Здравей"}}
    assert as_record(get_task("qna"), {"text": "c", "question": "q"}) == {"question": "q", "context": "c"}
    with pytest.raises(SoftPromptError, match="missing field 'question'; task 'qna' reads 'context', 'question'"):
        as_record(get_task("qna"), "a context without a question")
    with pytest.raises(SoftPromptError, match="field 'article' must be a string, got a number"):
        as_record(get_task("sum"), {"article": 3})


def test_sampling_is_seeded_per_input_whatever_surrounds_it(smoke_overrides):
    gen = Generator.load(_cfg("sum", smoke_overrides))
    texts = ["the cat sat on the mat and then it left", "rain fell all day over the old town"]
    hot = Sampling(temperature=1.5, top_p=0.95, seed=7)
    alone = gen.predict(texts[1:], sampling=hot)
    assert gen.predict(texts, sampling=hot)[1:] == alone
    others = {gen.predict(texts[1:], sampling=Sampling(temperature=1.5, seed=s))[0] for s in range(4)}
    assert len(others) > 1  # the seed matters: sampling is not greedy in disguise
    with pytest.raises(SoftPromptError, match="top_p must lie in"):
        Sampling(temperature=1.0, top_p=0)


def test_the_script_reads_texts_files_and_stdin(generate_script, smoke_overrides, tmp_path, capsys, monkeypatch):
    cfg = _cfg("sum", smoke_overrides)
    records = _split_records(cfg, "test")[:3]
    expected = Generator.load(cfg).predict(records)
    sets = [a for s in smoke_overrides for a in ("--set", s)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert generate_script("--config", str(smoke_config("sum")), *sets, "--input", str(src), "--output", str(out)) == 0
    rows = [json.loads(l) for l in out.open(encoding="utf-8")]
    assert [r["prediction"] for r in rows] == expected and rows[0]["article"] == records[0]["article"]
    capsys.readouterr()
    assert generate_script("--config", str(smoke_config("sum")), *sets, "--text", records[0]["article"]) == 0
    assert capsys.readouterr().out == expected[0] + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(records[1]["article"].replace("\n", " ") + "\n"))
    one_line = Generator.load(cfg).predict([records[1]["article"].replace("\n", " ")])
    assert generate_script("--config", str(smoke_config("sum")), *sets) == 0
    assert capsys.readouterr().out == one_line[0] + "\n"


def test_the_script_refuses_bad_input_in_one_line(generate_script, smoke_overrides, tmp_path, capsys):
    sets = [a for s in smoke_overrides for a in ("--set", s)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "c", "question": "q"}\n\n{"context": "c"}\n', encoding="utf-8")
    assert generate_script("--config", str(smoke_config("qna")), *sets, "--input", str(bad)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}, line 3: missing field 'question'" in err
    assert generate_script("--config", str(smoke_config("qna")), *sets, "--text", "only a context") == 2
    assert "missing field 'question'" in capsys.readouterr().err


def test_data_files_can_be_set_from_the_command_line(tmp_path, monkeypatch):
    test_file = tmp_path / "mine.jsonl"
    monkeypatch.chdir(tmp_path)
    cfg = load_config(smoke_config("sum"), ["data.files.test=mine.jsonl"])
    assert cfg.data.files["test"] == str(test_file)  # read from the working directory, not the config's folder
    assert cfg.data.files["train"].endswith("sum/train.jsonl")  # the config's other files stay
    with pytest.raises(ConfigError, match="data.files has no split 'tset'; splits are train, validation and test"):
        load_config(smoke_config("sum"), ["data.files.tset=x.jsonl"])
