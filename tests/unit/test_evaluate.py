"""Evaluation in process on the session's smoke checkpoints: the baselines, batched generation, token limits,
seeded samples, checkpoint refusals, inspection, carved splits. The script runs are in
tests/integration/test_evaluate_cli.py.
"""

import json
import shutil

import pytest

from conftest import smoke_config
from softprompt import evaluate as evaluate_module
from softprompt.config import load_config
from softprompt.errors import SoftPromptError
from softprompt.evaluate import Prompting, baseline_prefix, evaluate, sample_indices, summary_line, token_limits
from softprompt.generation import DecodeOptions, Unprompted, predict
from softprompt.inspection import format_report, inspect_prompt
from softprompt.model import SoftPromptModel, init_prompt
from softprompt.tasks import TASKS as task_registry
from softprompt.tasks import get_task

TASKS = tuple(task_registry)  # every registered task has a smoke config in tests/configs/smoke


@pytest.fixture(scope="module")
def runs(smoke_overrides):
    """{task: overrides} of the session's 1-epoch smoke trainings (conftest.py)."""
    return {task: smoke_overrides for task in TASKS}


def _cfg(runs, task):
    return load_config(smoke_config(task), runs[task])


def test_hard_and_none_baselines_run_and_keep_their_prefix_inside_the_window(runs, tmp_path):
    cfg = _cfg(runs, "tx")
    soft = evaluate(cfg, limit=3, decode=DecodeOptions(max_new_tokens=4), results_dir=tmp_path, progress=False)
    hard = evaluate(
        cfg,
        Prompting.baseline("hard"),
        limit=3,
        decode=DecodeOptions(max_new_tokens=4),
        results_dir=tmp_path,
        progress=False,
    )
    none = evaluate(
        cfg,
        Prompting.baseline("none"),
        limit=3,
        decode=DecodeOptions(max_new_tokens=4),
        results_dir=tmp_path,
        progress=False,
    )
    assert (tmp_path / "smoke-tx" / "test-baseline-hard" / "metrics.json").is_file()
    assert (tmp_path / "smoke-tx" / "test-baseline-none" / "predictions.jsonl").is_file()
    assert hard["checkpoint"] is None and hard["baseline"] == "hard" and hard["n"] == none["n"] == 3
    assert hard["decoding"]["prefix"] == cfg.model.init_text + "\n" and none["decoding"]["prefix"] is None
    assert summary_line(hard).endswith("| baseline hard")
    # The hard prefix takes more tokens than the 4 prompt vectors: the sources give up the difference.
    from softprompt.hub import load_base

    _, tokenizer = load_base(cfg.model)
    n_prefix = len(tokenizer(cfg.model.init_text + "\n", add_special_tokens=False)["input_ids"])
    assert hard["decoding"]["source_budget"] == soft["decoding"]["source_budget"] - max(0, n_prefix - 4)
    assert none["decoding"]["source_budget"] == soft["decoding"]["source_budget"]


def test_batched_predictions_equal_one_example_at_a_time(tiny):
    base, tokenizer = tiny
    model = SoftPromptModel(base, init_prompt(base, tokenizer, "random", 4, seed=1))
    texts = [
        "Article: The council met on Tuesday to vote on the new bridge across the river.\nSummary:",
        "Bulgarian: Заседанието е открито.\nEnglish:",
        "Article: Rain.\nSummary:",
        "Context: The river runs east past the old mill and the market.\nQuestion: Where?\nAnswer:",
        "Article: A fire closed the library for a week, the mayor said.\nSummary:",
    ]
    sources = [tokenizer(t)["input_ids"] for t in texts]
    assert len({len(s) for s in sources}) == len(sources)  # every batch needs padding
    task, limits = get_task("sum"), [12, 5, 12, 9, 12]
    for decoder in (model, Unprompted(base)):  # the tuned prompt, and the baselines' bare base
        batched = predict(decoder, tokenizer, sources, task, limits, DecodeOptions(3), progress=False)
        alone = [
            predict(decoder, tokenizer, [s], task, [n], DecodeOptions(1), progress=False)[0]
            for s, n in zip(sources, limits, strict=True)
        ]
        assert batched == alone
        assert any(batched)


def test_token_limits_follow_the_training_targets_length(runs):
    # Every row may generate as many tokens as its training target could hold (data.max_target_tokens, EOS included),
    # whatever its source length: tx used to stop at 1.5 x the source, which never bound for Bulgarian.
    sources = [[1] * 3, [1] * 100]
    assert token_limits(_cfg(runs, "tx"), sources, None) == [64, 64]
    assert token_limits(_cfg(runs, "qna"), sources, None) == [24, 24]
    assert token_limits(_cfg(runs, "sum"), sources, 10) == [10, 10]
    with pytest.raises(SoftPromptError, match="more than data.max_target_tokens"):
        token_limits(_cfg(runs, "sum"), sources, 65)


def test_hard_and_text_baselines_put_their_words_and_a_newline_before_the_source(runs, tmp_path, monkeypatch):
    cfg = _cfg(runs, "qna")
    seen = []
    real = evaluate_module.predict
    monkeypatch.setattr(
        evaluate_module,
        "predict",
        lambda m, tok, sources, *a, **k: seen.append((tok, sources)) or real(m, tok, sources, *a, **k),
    )
    evaluate(
        cfg,
        Prompting.baseline("hard"),
        limit=2,
        decode=DecodeOptions(max_new_tokens=2),
        results_dir=tmp_path,
        progress=False,
    )
    text = evaluate(
        cfg,
        Prompting.baseline("text", "reply with the place"),
        limit=2,
        decode=DecodeOptions(max_new_tokens=2),
        results_dir=tmp_path,
        progress=False,
    )
    (tok, hard_sources), (_, text_sources) = seen
    assert tok.decode(hard_sources[0]).startswith(cfg.model.init_text + "\nContext: ")  # not "...resultContext:"
    assert tok.decode(text_sources[0]).startswith("reply with the place\nContext: ")
    assert baseline_prefix(cfg, tok, "hard") == tok(cfg.model.init_text + "\n", add_special_tokens=False)["input_ids"]
    assert text["baseline"] == "text" and text["decoding"]["prefix"] == "reply with the place\n"
    assert (tmp_path / "smoke-qna" / "validation-baseline-text" / "metrics.json").is_file()


def test_evaluation_scores_the_whole_split_and_limit_draws_a_seeded_sample(runs, tmp_path):
    # data.max_eval_examples bounds training's validation loss only; --limit may ask for more, and gets a sample.
    cfg = load_config("tests/configs/smoke/qna.yaml", [*runs["qna"], "data.max_eval_examples=5"])
    whole = evaluate(cfg, decode=DecodeOptions(max_new_tokens=2), results_dir=tmp_path / "a", progress=False)
    assert whole["n"] == whole["split_size"] == 10 and whole["sample"] is None
    some = evaluate(cfg, limit=8, decode=DecodeOptions(max_new_tokens=2), results_dir=tmp_path / "b", progress=False)
    assert some["n"] == 8 and some["sample"] == {"seed": 0, "indices": sample_indices(10, 8)}
    all_rows = [json.loads(x) for x in (tmp_path / "a/smoke-qna/validation/predictions.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (tmp_path / "b/smoke-qna/validation/predictions.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == [all_rows[i]["source"] for i in sample_indices(10, 8)]
    assert sample_indices(10, 8) == sample_indices(10, 8) and sorted(set(sample_indices(1000, 8))) != list(range(8))


def test_a_checkpoint_of_another_task_is_refused(runs):
    sum_ckpt = _cfg(runs, "sum").run_dir / "epoch_001"
    with pytest.raises(SoftPromptError, match="trained for task 'sum', not 'qna'"):
        evaluate(_cfg(runs, "qna"), Prompting(checkpoint=sum_ckpt))


def test_a_corrupted_checkpoint_given_by_path_is_refused_by_name(runs, tmp_path):
    ckpt = shutil.copytree(_cfg(runs, "qna").run_dir / "epoch_001", tmp_path / "epoch_001")
    data = bytearray((ckpt / "prompt.safetensors").read_bytes())
    data[-1] ^= 0x01  # one bit of the last float: still loads, wrong value
    (ckpt / "prompt.safetensors").write_bytes(bytes(data))
    with pytest.raises(SoftPromptError, match=r"epoch_001: prompt\.safetensors does not match its recorded SHA-256"):
        evaluate(_cfg(runs, "qna"), Prompting(checkpoint=ckpt), results_dir=tmp_path)


def test_inspect_prompt_measures_drift_from_the_init(runs, tiny, tmp_path):
    base, tokenizer = tiny
    words = "summarize shorten distill short"
    untrained = SoftPromptModel(base, init_prompt(base, tokenizer, "words", 4, words), base_id="builtin:tiny-gpt2")
    untrained.save_prompt(tmp_path, task="sum", init="words", init_text=words)
    report = inspect_prompt(tmp_path, k=3)
    assert [v.init_label for v in report.vectors] == words.split()
    assert all(abs(v.init_distance) < 1e-6 and len(v.nearest) == 3 for v in report.vectors)

    trained = inspect_prompt(_cfg(runs, "sum").run_dir, k=3)  # a run folder: its latest checkpoint
    assert trained.epoch == 1 and all(v.init_distance > 1e-4 for v in trained.vectors)
    assert all(v.nearest[0][1] >= v.nearest[-1][1] for v in trained.vectors)
    table = format_report(trained)
    assert len(table.splitlines()) == 4 + 4 and "nearest tokens" in table


def test_a_carved_test_split_never_overlaps_the_training_examples(runs):
    # SQuAD has no test split: it is carved out of train before the training subset is taken, in training and
    # in evaluation alike, so `--split test` scores no example the prompt was trained on.
    from softprompt.data import load_raw

    cfg = load_config("tests/configs/smoke/qna.yaml", [*runs["qna"], "data.max_train_examples=25", "data.carve_test=8"])
    train_only = load_raw(cfg, ("train",))["train"]  # what training reads
    test = load_raw(cfg, ("test",), cap_eval=False)["test"]  # what evaluation scores
    key = lambda r: (r["context"], r["question"])  # noqa: E731
    assert len(train_only) == 25 and len(test) == 8
    assert not {key(r) for r in train_only} & {key(r) for r in test}
