"""Prompt tuning must *learn*: on builtin:tiny-tasks a short training beats both baselines by a wide margin.

The built-in model can do every synthetic task, but only when told which of two behaviours is wanted;
without the right words in front it does the distractor. A bug that breaks real results (the source
formatted differently in training and evaluation, a lost EOS, a wrong decoding cut, the prompt placed
elsewhere at generation) breaks these scores. One short training per task is shared by the tests, and
a prompt trained by PEFT's own loop on the same data, imported through the PEFT-adapter path, scores
as ours does.
"""

import copy

import pytest
import torch
from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

from softprompt.config import load_config
from softprompt.data import batch_order, iter_batches, load_task_data
from softprompt.evaluate import Prompting, evaluate
from softprompt.hub import context_window, load_base, resolve_model_path
from softprompt.tasks import get_task
from softprompt.train import train

TASKS = ("qna", "sum", "tx")
SHORT = ["model.init=text"]  # the smoke training itself, from the text init that PEFT shares
LIMIT = 100  # test examples scored per variant (a seeded sample of the 200)
MARGIN = {"qna": 80, "sum": 80, "tx": 80}  # points the tuned prompt must beat the better baseline by
GAP = 5  # points the tuned prompt may stay below the oracle (issue #10's target)
ORACLE = {"qna": "reply with the place", "sum": "keep the opening lines", "tx": "turn each word over"}


def score(metrics):
    return metrics["scores"][get_task(metrics["task"]).headline[0]]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """{task: (config, metrics of the tuned prompt)} after one short training per task."""
    out = tmp_path_factory.mktemp("quality")
    result = {}
    for task in TASKS:
        cfg = load_config(f"configs/smoke/{task}.yaml", [*SHORT, f"train.output_dir={out}"])
        train(cfg, quiet=True, echo=lambda line: None, results_dir=None)
        result[task] = (cfg, evaluate(cfg, limit=LIMIT, results_dir=out / "results", progress=False))
    return result


@pytest.mark.parametrize("task", TASKS)
def test_a_short_training_beats_both_baselines_by_a_wide_margin(tuned, task, tmp_path):
    cfg, metrics = tuned[task]
    tuned_score = score(metrics)
    baselines = {
        b: score(evaluate(cfg, Prompting.baseline(b), limit=LIMIT, results_dir=tmp_path, progress=False))
        for b in ("none", "hard")
    }
    # Margins well under what the smoke runs measured (tuned vs the better baseline: EM 100 vs 0, ROUGE-L 99.8
    # vs 0.6, BLEU 98.8 vs 0 on all 200 test examples), and far above what a broken pipeline scores.
    assert all(b <= tuned_score / 2 for b in baselines.values()), (task, tuned_score, baselines)
    assert tuned_score - max(baselines.values()) >= MARGIN[task], (task, tuned_score, baselines)


def test_a_prompt_trained_by_peft_scores_as_ours(tuned, tmp_path):
    """Same data, batches, init and optimizer, through PEFT's model; imported as a PEFT adapter folder."""
    cfg, ours = tuned["tx"]  # BLEU: a score with many levels, so 2 points mean something
    base, tokenizer = load_base(cfg.model)
    peft_model = get_peft_model(
        copy.deepcopy(base),
        PromptTuningConfig(
            task_type="CAUSAL_LM",
            prompt_tuning_init=PromptTuningInit.TEXT,
            num_virtual_tokens=cfg.model.prompt_length,
            prompt_tuning_init_text=cfg.model.init_text,
            tokenizer_name_or_path=resolve_model_path(cfg.model.name_or_path),
        ),
    )
    peft_model.eval()  # dropout off, as in our training
    params = [p for p in peft_model.parameters() if p.requires_grad]
    t = cfg.train
    opt = torch.optim.AdamW(params, lr=t.lr, betas=t.betas, eps=t.eps, weight_decay=t.weight_decay)
    train_ds = load_task_data(cfg, tokenizer, context_window(base)).splits["train"]
    lengths = [len(s) + len(x) for s, x in zip(train_ds["source_ids"], train_ds["target_ids"], strict=False)]
    for epoch in range(t.epochs):
        order = batch_order(lengths, t.batch_size, t.seed, epoch, cfg.data.group_by_length)
        for batch in iter_batches(train_ds, order, tokenizer.pad_token_id):
            peft_model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
    peft_model.save_pretrained(tmp_path / "adapter")
    theirs = evaluate(
        cfg, Prompting(checkpoint=tmp_path / "adapter"), limit=LIMIT, results_dir=tmp_path, progress=False
    )
    assert abs(score(theirs) - score(ours)) <= 2, (score(theirs), score(ours))


@pytest.mark.parametrize("task", TASKS)
def test_the_pretraining_instruction_as_a_hard_prompt_does_the_task(task, tmp_path):
    """The oracle: what the frozen model can do when told in its own words (measured 99.5, 99.9, 98.6)."""
    cfg = load_config(f"configs/smoke/{task}.yaml")
    oracle = evaluate(cfg, Prompting.baseline("text", ORACLE[task]), limit=LIMIT, results_dir=tmp_path, progress=False)
    assert score(oracle) >= 95, (task, score(oracle))


@pytest.mark.parametrize("task", TASKS)
def test_the_tuned_prompt_reaches_what_the_model_can_do(tuned, task, tmp_path):
    """Tuning reaches the oracle: within GAP points of the pretraining instruction given as a hard prompt."""
    cfg, metrics = tuned[task]
    oracle = evaluate(cfg, Prompting.baseline("text", ORACLE[task]), limit=LIMIT, results_dir=tmp_path, progress=False)
    assert score(metrics) >= score(oracle) - GAP, (task, score(metrics), score(oracle))
