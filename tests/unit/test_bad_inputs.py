"""Every bad input ends in one clear SoftPromptError naming the culprit: configs, overrides, data files, model
paths, prompt files, and the code's own safety rules. The command-line cases are in
tests/integration/test_bad_inputs_cli.py.
"""

import copy
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import QNA_RECORD, ROOT, jsonl, write
from softprompt.checkpoint import load_trainer_state, save_checkpoint
from softprompt.config import ConfigError, ModelConfig, config_from_dict, load_config
from softprompt.data import check_jsonl, load_raw, load_task_data
from softprompt.errors import SoftPromptError
from softprompt.hub import load_base
from softprompt.model import SoftPromptModel, read_prompt
from softprompt.tasks import get_task

SMOKE = "tests/configs/smoke/qna.yaml"


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "task: qna\nmodel:\n  promt_length: 4\n",
            r"unknown key 'model.promt_length' \(did you mean 'prompt_length'\?\)",
        ),
        ("task: qna\ntrain:\n  batch_size: two\n", r"train.batch_size: must be an integer, got 'two'"),
        ("task: qna\ntrain:\n  lr: 0\n", r"train.lr must be positive, got 0.0"),
        ("task: qna\ntrain:\n  lr: -0.1\n", r"train.lr must be positive, got -0.1"),
        ("task: qna\ntrain:\n  batch_size: 0\n", r"train.batch_size must be at least 1, got 0"),
        ("task: qna\nmodel:\n  prompt_length: 0\n", r"model.prompt_length must be at least 1, got 0"),
        ("task: qna\ntrain:\n  save_every: 0\n", r"train.save_every must be at least 1, got 0"),
        ("task: qna\ntrain:\n  epochs: 0\n", r"train.epochs must be at least 1, got 0"),
        ("task: qna\nmodel:\n  init_text: one two three\n", r"init_text has 3 word\(s\) but model.prompt_length is 4"),
        ("task: qan\n", r"task must be one of qna, sum, tx, got 'qan' \(did you mean 'qna'\?\)"),
        ("task: qna\nmodel:\n  init: word\n", r"model.init: must be one of words, text, vocab, random, got 'word'"),
    ],
)
def test_config_mistakes_name_the_file_and_key(tmp_path, body, message):
    path = write(tmp_path / "my.yaml", body)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    head, *listing = str(info.value).splitlines()
    assert head.startswith(f"{path}: ")
    # One problem: one line. Several (prompt_length 0 also breaks the init words): a count, then one line each.
    assert not listing or (head == f"{path}: {len(listing)} problems in the config:" and len(listing) > 1)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr", r"--set 'train.lr': expected key=value, e.g. --set train.lr=0.3"),
        ("train.lrr=0.1", r"--set 'train.lrr=0.1': train has no key 'lrr' \(did you mean 'lr'\?\)"),
        ("optim.lr=0.1", r"--set 'optim.lr=0.1': unknown key 'optim.lr'"),
    ],
)
def test_bad_set_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ROOT / SMOKE, [override])


def test_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("task: qna\nrun_name: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not valid UTF-8 text"):
        load_config(path)


# ------------------------------------------------------------------ data files


QNA = get_task("qna")


@pytest.mark.parametrize(
    "lines, message",
    [
        ([], r"empty\.jsonl: the file holds no records"),
        (["", "   "], r"empty\.jsonl: the file holds no records"),
        ([QNA_RECORD, "{'context': 1}"], r"empty\.jsonl, line 2: not valid JSON \(Expecting property name"),
        ([QNA_RECORD, '["a", "b"]'], r"line 2: expected a JSON object, got an array for task 'qna'"),
        ([{**QNA_RECORD, "question": None}], r"line 1: field 'question' must be a string, got null"),
        ([{k: v for k, v in QNA_RECORD.items() if k != "question"}], r"line 1: missing field 'question'"),
        ([{**QNA_RECORD, "answers": {"answer_start": [0]}}], r"line 1: missing field 'answers.text'"),
        (
            [{**QNA_RECORD, "answers": {"text": "the Kestrel Hills"}}],
            r"line 1: field 'answers.text' must be a non-empty list of strings, got a string",
        ),
        (
            [{**QNA_RECORD, "answers": {"text": []}}],
            r"line 1: field 'answers.text' must be a non-empty list of strings",
        ),
        ([{**QNA_RECORD, "answers": {"text": ["   "]}}], r"line 1: empty target text for task 'qna'"),
        ([{**QNA_RECORD, "context": ["a list"]}], r"line 1: field 'context' must be a string, got an array"),
        (["[" * 100_000], r"line 1: JSON nested too deeply"),
        (
            [QNA_RECORD, r'{"context": "a \ud800", "question": "q", "answers": {"text": ["x"]}}'],
            r"line 2: a string holds an unpaired UTF-16 surrogate escape",
        ),
    ],
)
def test_bad_jsonl_files_name_file_and_line(tmp_path, lines, message):
    path = jsonl(tmp_path / "empty.jsonl", *lines) if lines else write(tmp_path / "empty.jsonl", "")
    with pytest.raises(SoftPromptError, match=message):
        check_jsonl(path, QNA)


def test_empty_target_for_sum_and_tx(tmp_path):
    with pytest.raises(SoftPromptError, match=r"line 2: empty target text for task 'sum'"):
        check_jsonl(
            jsonl(tmp_path / "s.jsonl", {"article": "a", "highlights": "b"}, {"article": "a", "highlights": ""}),
            get_task("sum"),
        )
    with pytest.raises(SoftPromptError, match=r"line 1: empty target text for task 'tx'"):
        check_jsonl(jsonl(tmp_path / "t.jsonl", {"translation": {"bg": "Здравей", "en": " "}}), get_task("tx"))


def test_missing_data_file_and_directory(tmp_path):
    with pytest.raises(SoftPromptError, match=rf"data file not found: {re.escape(str(tmp_path))}/nope\.jsonl$"):
        check_jsonl(tmp_path / "nope.jsonl", QNA)
    with pytest.raises(SoftPromptError, match="it is a directory"):
        check_jsonl(tmp_path, QNA)


def test_non_utf8_data_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        json.dumps(QNA_RECORD).encode()
        + b"\n"
        + json.dumps({**QNA_RECORD, "question": "caf\u00e9?"}, ensure_ascii=False).encode("latin-1")
        + b"\n"
    )
    with pytest.raises(SoftPromptError, match=r"latin1\.jsonl, line 2: not UTF-8 text \(byte 0xe9 at column \d+\)"):
        check_jsonl(path, QNA)


def test_files_datasets_cannot_read_are_a_clear_error(tmp_path, monkeypatch):
    # Lines that each pass the check can still trip the Arrow reader (older datasets releases refuse a
    # field whose type changes between lines); whatever it raises becomes one sentence naming the files.
    import datasets
    import pyarrow

    def refuse(*args, **kwargs):
        raise pyarrow.lib.ArrowInvalid("JSON parse error: Column(/extra) changed from object to string in row 1")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    path = jsonl(tmp_path / "mixed.jsonl", {**QNA_RECORD, "extra": {"a": 1}}, {**QNA_RECORD, "extra": "text"})
    cfg = config_from_dict({"task": "qna", "data": {"files": {"train": str(path), "validation": str(path)}}})
    with pytest.raises(
        SoftPromptError,
        match=r"mixed\.jsonl.*could not read these files as one table "
        r"\(JSON parse error: Column\(/extra\) changed",
    ):
        load_raw(cfg, ("train",))


def test_a_source_longer_than_the_context_window_is_cut_and_counted(tmp_path, tiny):
    base, tokenizer = tiny
    long = {**QNA_RECORD, "context": "The Velmora River rises in the Kestrel Hills. " * 400}  # ~4000 tokens, window 256
    path = jsonl(tmp_path / "long.jsonl", long, QNA_RECORD)
    cfg = config_from_dict({"task": "qna", "data": {"files": {"train": str(path), "validation": str(path)}}})
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.deprecation_warnings.clear()
    data = load_task_data(cfg, tokenizer, window=256)
    # No "Token indices sequence length is longer than the specified maximum" warning: the cut is planned.
    assert not tokenizer.deprecation_warnings.get("sequence-length-is-longer-than-the-specified-maximum")
    assert data.source_budget == 256 - 4 - cfg.data.max_target_tokens
    assert data.truncated_sources == {"train": 1, "validation": 1}
    row = data.splits["train"][0]
    assert len(row["source_ids"]) == data.source_budget
    assert tokenizer.decode(row["source_ids"]).endswith("\nQuestion: Where does it rise?\nAnswer:")  # never cut


def test_hub_ids_with_no_network_give_the_offline_paragraph():
    # conftest sets HF_HUB_OFFLINE=1: as good as no network, and quick.
    with pytest.raises(SoftPromptError) as info:
        load_base(ModelConfig(name_or_path="some-org/some-model"))
    text = str(info.value)
    assert "\n" not in text and "'some-org/some-model'" in text
    assert "local directory" in text and "HF_HUB_OFFLINE=1" in text and "builtin:tiny-gpt2" in text
    with pytest.raises(SoftPromptError) as info:
        load_raw(config_from_dict({"task": "sum", "data": {"dataset": "some-org/some-data"}}), ("train",))
    text = str(info.value)
    assert "\n" not in text and "dataset 'some-org/some-data'" in text
    assert "data.files" in text and "HF_HUB_OFFLINE=1" in text


@pytest.mark.parametrize(
    "name, message",
    [
        ("./no/such/model", r"'./no/such/model': no such local directory"),
        ("builtin:huge-gpt2", r"unknown built-in model; built-ins are builtin:tiny-gpt2"),
    ],
)
def test_bad_model_paths(name, message):
    with pytest.raises(SoftPromptError, match=message):
        load_base(ModelConfig(name_or_path=name))


def test_a_model_directory_without_config_json(tmp_path):
    with pytest.raises(SoftPromptError, match="has no config.json"):
        load_base(ModelConfig(name_or_path=str(tmp_path)))


# ------------------------------------------------------------------ checkpoints


@pytest.fixture
def model(tiny):
    base, _ = tiny
    return SoftPromptModel(copy.deepcopy(base), torch.randn(4, base.config.n_embd), base_id="builtin:tiny-gpt2")


def test_a_prompt_of_another_hidden_size_or_base_model(model, tmp_path):
    save_file({"prompt": torch.zeros(4, 32)}, str(tmp_path / "prompt.safetensors"))
    write(tmp_path / "prompt.json", json.dumps({"base_model": "builtin:tiny-gpt2", "hidden_size": 32}))
    with pytest.raises(SoftPromptError, match=r"hidden size 32 .* but this model's is 64"):
        model.load_prompt(tmp_path)
    save_file({"prompt": torch.zeros(4, 64)}, str(tmp_path / "prompt.safetensors"))
    write(tmp_path / "prompt.json", json.dumps({"base_model": "gpt2", "hidden_size": 64}))
    with pytest.raises(SoftPromptError, match=r"trained on base model 'gpt2', not 'builtin:tiny-gpt2'"):
        model.load_prompt(tmp_path)


def test_a_checkpoint_directory_that_does_not_exist(model, tmp_path):
    with pytest.raises(SoftPromptError, match=r"nope: prompt/checkpoint directory not found"):
        model.load_prompt(tmp_path / "nope")
    with pytest.raises(SoftPromptError, match=r"no prompt.safetensors in this directory"):
        read_prompt(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_corrupted_or_truncated_prompt_file(model, tmp_path, damage):
    model.save_prompt(tmp_path)
    path = tmp_path / "prompt.safetensors"
    path.write_bytes(path.read_bytes()[:-100] if damage == "truncate" else b"\x00" * 8 + b"not safetensors")
    with pytest.raises(SoftPromptError, match=r"prompt\.safetensors: not a readable safetensors file"):
        read_prompt(tmp_path)


def test_resume_onto_another_prompt_length_is_refused(model, tiny, tmp_path):
    ckpt = save_checkpoint(tmp_path, 1, 1, model, torch.optim.AdamW([model.prompt]), {}, {})
    base, _ = tiny
    longer = SoftPromptModel(copy.deepcopy(base), torch.zeros(5, 64), base_id="builtin:tiny-gpt2")
    with pytest.raises(SoftPromptError) as info:
        load_trainer_state(ckpt, longer, torch.optim.AdamW([longer.prompt]))
    message = str(info.value)
    assert "\n" not in message and str(ckpt / "prompt.safetensors") in message
    assert "has shape [4, 64] but this run's is [5, 64]" in message
    assert longer.prompt.shape == (5, 64) and not longer.prompt.any()  # refused before anything was loaded


# ------------------------------------------------------------------ security


SOURCES = sorted([*(ROOT / "src" / "softprompt").glob("*.py"), *(ROOT / "scripts").glob("*.py")])


def test_no_pickle_no_shell_no_unsafe_yaml_in_the_code():
    assert len(SOURCES) > 10
    for path in SOURCES:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.name}:{n}: {line.strip()}"
            # torch.load only as the issue allows: weights_only=True (no pickle objects), on the same line.
            assert "torch.load(" not in line or "weights_only=True" in line, where
            code = line.replace("yaml.safe_load(", "").replace(".eval()", "")
            for banned in (
                "import pickle",
                "pickle.load",
                "shell=True",
                "os.system(",
                "os.popen(",
                "yaml.load(",
                "yaml.unsafe_load",
                "eval(",
                "exec(",
                "trust_remote_code=True",
            ):
                assert banned not in code, where


def test_trust_remote_code_is_off_unless_the_config_sets_it(tmp_path, monkeypatch):
    import transformers

    seen = []

    def fake(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake)
    assert ModelConfig().trust_remote_code is False
    for text, expected in [("task: qna\n", False), ("task: qna\nmodel:\n  trust_remote_code: true\n", True)]:
        cfg = load_config(write(tmp_path / "c.yaml", text), ["model.name_or_path=some-org/some-model"])
        with pytest.raises(SoftPromptError):
            load_base(cfg.model)
        assert seen[-1] is expected
    for shipped in (ROOT / "configs").rglob("*.yaml"):
        assert load_config(shipped).model.trust_remote_code is False, shipped


def test_paths_in_a_config_are_relative_to_the_config_file_not_the_working_directory(tmp_path, monkeypatch):
    write(
        tmp_path / "project" / "configs" / "run.yaml",
        "task: qna\ndata:\n  files:\n    train: ../data/train.jsonl\ntrain:\n  output_dir: ../ckpt\n",
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config("project/configs/run.yaml", ["data.files={train: ../data/t2.jsonl}"])
    assert Path(cfg.data.files["train"]).resolve() == tmp_path / "project" / "data" / "t2.jsonl"
    assert Path(cfg.train.output_dir).resolve() == tmp_path / "project" / "ckpt"
    assert (Path(cfg.run_dir).resolve()) == tmp_path / "project" / "ckpt" / "run"
