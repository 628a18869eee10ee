"""The synthetic task data: deterministic, in the Hub schemas, disjoint splits, targets that follow their rules."""

import json
import random

import pytest

from conftest import ROOT
from softprompt import synthetic
from softprompt.config import load_config
from softprompt.data import load_task_data
from softprompt.tasks import TASKS, get_task

SHIPPED = ROOT / "data" / "synthetic"


@pytest.mark.parametrize("task", sorted(synthetic.RECORDS))
def test_shipped_splits_are_what_the_generator_writes(task):
    for split, size in synthetic.SPLIT_SIZES.items():
        lines = (SHIPPED / task / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == size
        assert [json.loads(x) for x in lines] == synthetic.split_records(task, split)


@pytest.mark.parametrize("task", sorted(synthetic.RECORDS))
def test_splits_are_disjoint(task):
    keys = {s: {synthetic._input_key(task, r) for r in synthetic.split_records(task, s)} for s in synthetic.SPLIT_SIZES}
    assert all(len(k) == synthetic.SPLIT_SIZES[s] for s, k in keys.items())  # no duplicate inside a split either
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]


def test_targets_follow_their_rules():
    lex = synthetic.lexicon()
    rng = random.Random(5)
    for _ in range(200):
        qna = synthetic.qna_record(rng, lex, "x")
        answer, start = qna["answers"]["text"][0], qna["answers"]["answer_start"][0]
        asked = synthetic.BEHAVIOURS["qna"]["host"](qna)
        assert qna["context"][start : start + len(answer)] == answer  # a span of the context, as in SQuAD
        assert qna["context"][: start - 1].endswith(asked)  # the town follows the host's name
        summary = synthetic.sum_record(rng, lex, "x")
        sentences = synthetic._sentences(summary["article"])
        assert len(sentences) >= 4 and summary["highlights"].split("\n") == sentences[:2]
        assert sentences[:2] != sentences[-2:]  # the distractor (last two) is another text
        pair = synthetic.tx_record(rng, lex, "x")["translation"]
        assert [lex.bg_to_en[w] for w in pair["bg"].split()] == pair["en"].split()
        assert all("\u0400" <= c <= "\u04ff" for c in pair["bg"].replace(" ", ""))  # Cyrillic


def test_wanted_behaviour_is_the_task_target_and_instructions_are_not_init_words():
    for task in synthetic.RECORDS:
        record = synthetic.split_records(task, "test")[0]
        assert get_task(task).target(record) == " " + synthetic.BEHAVIOURS[task][synthetic.WANTED[task]](record)
        assert synthetic.DEFAULT[task] != synthetic.WANTED[task]
    init_words = {w for t in TASKS.values() for w in t.init_words.split()}
    assert not init_words & {w for text in synthetic.INSTRUCTIONS.values() for w in text.split()}


@pytest.mark.parametrize("task", sorted(synthetic.RECORDS))
def test_smoke_configs_read_the_splits_through_the_real_loader(task, tiny):
    base, tokenizer = tiny  # any tokenizer will do: this checks the schema and the loading path
    cfg = load_config(ROOT / "configs" / "smoke" / f"{task}.yaml")
    data = load_task_data(cfg, tokenizer, 256, splits=("train", "validation", "test"), cap_eval=False)
    assert {s: len(ds) for s, ds in data.splits.items()} == synthetic.SPLIT_SIZES
