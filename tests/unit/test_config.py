"""Config loading: typed fields, unknown keys, ranges, overrides, errors naming file and key."""

from pathlib import Path

import pytest

from conftest import ROOT
from softprompt.config import (
    Config,
    ConfigError,
    Precision,
    PromptInit,
    Tracker,
    config_from_dict,
    default_run_name,
    load_config,
)


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize("name", ["qna", "sum", "tx", "smoke/qna", "smoke/sum", "smoke/tx"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.run_name == name.replace("/", "-")
    assert cfg.model.prompt_length == 4
    assert len(cfg.model.init_text.split()) == 4
    assert cfg.train.save_every == 3


def test_reference_hyperparameters():
    for task, words in [
        ("qna", "question answer help result"),
        ("sum", "summarize shorten distill short"),
        ("tx", "bulgarian english translation translate_bg_en"),
    ]:
        cfg = load_config(ROOT / "configs" / f"{task}.yaml")
        assert (cfg.model.name_or_path, cfg.train.batch_size, cfg.train.lr, cfg.train.epochs) == ("gpt2", 2, 5e-5, 10)
        assert cfg.model.init is PromptInit.WORDS and cfg.model.init_text == words


def test_defaults_and_task_init_words(tmp_path):
    cfg = load_config(write(tmp_path, "task: sum\n"))
    assert isinstance(cfg, Config)
    assert cfg.model.init_text == "summarize shorten distill short"
    assert cfg.train.precision is Precision.FP32 and cfg.train.weight_decay == 0.0
    assert cfg.run_name == "c"


def test_overrides_are_typed(tmp_path):
    p = write(tmp_path, "task: qna\n")
    cfg = load_config(
        p,
        [
            "train.lr=0.3",
            "data.max_train_examples=200",
            "train.precision=bf16",
            "model.init_text=a b c d",
            "train.max_grad_norm=null",
            "train.betas=[0.8, 0.99]",
        ],
    )
    assert cfg.train.lr == 0.3 and cfg.data.max_train_examples == 200
    assert cfg.train.precision is Precision.BF16 and cfg.model.init_text == "a b c d"
    assert cfg.train.max_grad_norm is None and cfg.train.betas == (0.8, 0.99)


def test_tracker_defaults_to_none_and_takes_tensorboard(tmp_path):
    p = write(tmp_path, "task: qna\ntrain:\n  tracker: tensorboard\n")
    assert load_config(p).train.tracker is Tracker.TENSORBOARD
    assert load_config(write(tmp_path, "task: qna\n", "d.yaml")).train.tracker is Tracker.NONE


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr", "expected key=value"),
        ("train.lrr=0.1", "did you mean 'lr'"),
        ("optim.lr=0.1", "unknown key 'optim.lr'"),
        ("train.batch_size=two", "train.batch_size: must be an integer"),
        ("train.tracker=tensorbord", "did you mean 'tensorboard'"),
    ],
)
def test_bad_overrides(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, "task: qna\n"), [override])


def test_yaml_syntax_error_names_the_line(tmp_path):
    p = write(tmp_path, "task: qna\ntrain:\n  lr: [0.1\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: YAML syntax error at line \d+"):
        load_config(p)


def test_all_problems_reported_together_with_file_and_keys(tmp_path):
    p = write(tmp_path, "task: sum\nmodel:\n  promt_length: 4\ntrain:\n  lr: 0\n  batch_size: 0\n  epochs: '3'\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    text = str(info.value)
    assert str(p) in text
    assert "unknown key 'model.promt_length' (did you mean 'prompt_length'?)" in text
    assert "train.epochs: must be an integer" in text
    assert "train.lr must be positive, got 0.0" in text
    assert "train.batch_size must be at least 1, got 0" in text
    assert "4 problems in the config" in text


@pytest.mark.parametrize(
    "body, message",
    [
        ("train:\n  lr: -1", "train.lr must be positive"),
        ("train:\n  lr: .inf", "train.lr must be a finite number"),
        ("train:\n  batch_size: 0", "train.batch_size must be at least 1"),
        ("train:\n  save_every: 0", "train.save_every must be at least 1"),
        ("train:\n  save_every_steps: 0", r"train.save_every_steps must be at least 1 \(or null\), got 0"),
        ("train:\n  epochs: 0", "train.epochs must be at least 1"),
        ("model:\n  prompt_length: 0", "model.prompt_length must be at least 1"),
        ("model:\n  prompt_length: 5", "init_text has 4 word\\(s\\) but model.prompt_length is 5"),
        (
            "model:\n  init: wordz",
            "must be one of words, text, vocab, random, got 'wordz' \\(did you mean 'words'\\?\\)",
        ),
        ("train:\n  warmup_steps: 10", "schedule is 'constant'"),
    ],
)
def test_out_of_range_values(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"task: sum\n{body}\n"))


def test_unknown_task_and_missing_task(tmp_path):
    with pytest.raises(ConfigError, match="task must be one of qna, sum, tx, got 'summ' \\(did you mean 'sum'\\?\\)"):
        load_config(write(tmp_path, "task: summ\n"))
    with pytest.raises(ConfigError, match="task is required"):
        load_config(write(tmp_path, "model:\n  prompt_length: 4\n"))


def test_paths_resolve_relative_to_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    cfg = load_config(write(tmp_path / "sub", "task: tx\ndata:\n  files:\n    train: ../d/train.jsonl\n"))
    assert Path(cfg.data.files["train"]) == tmp_path / "sub" / ".." / "d" / "train.jsonl"


def test_default_run_name():
    assert default_run_name(Path("tests/configs/smoke/sum.yaml")) == "smoke-sum"
    assert default_run_name(Path("/x/configs/qna.yaml")) == "qna"
    assert default_run_name(Path("/elsewhere/my_run.yaml")) == "my_run"


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        config_from_dict({"task": "sum", "train": [1, 2]})


REFERENCE = {  # the reference run: PyTorch's AdamW defaults beyond its lr, model.train() dropout, no clipping
    ("model", "prompt_length"): 4,
    ("model", "init"): "words",
    ("model", "keep_dropout"): True,
    ("train", "lr"): 5e-5,
    ("train", "weight_decay"): 0.01,
    ("train", "betas"): [0.9, 0.999],
    ("train", "eps"): 1e-8,
    ("train", "max_grad_norm"): None,
    ("train", "batch_size"): 2,
    ("train", "grad_accum_steps"): 1,
    ("train", "epochs"): 10,
    ("train", "save_every"): 3,
    ("train", "log_every"): 500,
    ("data", "max_train_examples"): 10000,
}
TUNED_DEVIATIONS = {
    ("model", "keep_dropout"): False,
    ("train", "lr"): 0.03,
    ("train", "weight_decay"): 0.0,
    ("train", "max_grad_norm"): 1.0,
}


@pytest.mark.parametrize("task", ["qna", "sum", "tx"])
def test_real_configs_match_the_reference_and_tuned_ones_deviate_only_as_documented(task):
    ref = load_config(f"configs/{task}.yaml").to_dict()
    tuned = load_config(f"configs/tuned/{task}.yaml").to_dict()
    for (section, key), value in REFERENCE.items():
        assert ref[section][key] == value, f"configs/{task}.yaml {section}.{key}"
    changed = {(s, k): tuned[s][k] for s in ("model", "data", "train") for k in ref[s] if tuned[s][k] != ref[s][k]}
    assert changed == TUNED_DEVIATIONS
