"""Many prompts over one frozen model: mixed-task batches and prompt ensembles equal the prompts run alone."""

import copy

import pytest
import torch
import torch.nn.functional as F

from softprompt.data import generation_batch
from softprompt.errors import SoftPromptError
from softprompt.model import SoftPromptModel, init_prompt
from softprompt.multi import MultiPromptModel, ensemble_generate, load_prompts

SOURCES = [
    "Article: The council met on Tuesday to vote.\nSummary:",
    "Bulgarian: Заседанието е открито.\nEnglish:",
    "Context: The river runs east.\nQuestion: Where does the river run?\nAnswer:",
    "Article: short.",
]
GREEDY = dict(max_new_tokens=12, do_sample=False, eos_token_id=None)


@pytest.fixture(scope="module")
def prompts(tiny):
    """Three prompts of different inits and lengths (4, 6, 3): the length-padding path is exercised too."""
    base, tokenizer = tiny
    return {
        "qna": init_prompt(base, tokenizer, "vocab", 4, seed=1),
        "sum": init_prompt(base, tokenizer, "vocab", 6, seed=2),
        "tx": init_prompt(base, tokenizer, "random", 3, seed=3),
    }


def _ids(tokenizer, texts):
    return [tokenizer(t)["input_ids"] for t in texts]


def test_a_mixed_batch_equals_each_task_alone_in_one_forward_per_step(tiny, prompts):
    base, tokenizer = tiny
    multi = MultiPromptModel(base, prompts)
    sources = _ids(tokenizer, SOURCES) + _ids(tokenizer, SOURCES[:2])
    tasks = ["qna", "sum", "tx", "sum", "tx", "qna"]
    calls = []
    hook = base.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs), with_kwargs=True)
    try:
        together = multi.generate(**generation_batch(sources, tokenizer.pad_token_id), tasks=tasks, **GREEDY)
    finally:
        hook.remove()
    assert together.shape == (6, 12)
    # One forward per new token, each over the whole mixed batch.
    assert len(calls) == 12
    assert all(
        next(v for k, v in c.items() if k in ("inputs_embeds", "input_ids") and v is not None).shape[0] == 6
        for c in calls
    )
    for i, (source, task) in enumerate(zip(sources, tasks, strict=False)):
        single = SoftPromptModel(base, prompts[task])
        alone = single.generate(**generation_batch([source], tokenizer.pad_token_id), **GREEDY)
        assert together[i].tolist() == alone[0].tolist(), f"row {i} ({task})"
    # The same source under different prompts decodes differently: each row really got its own prompt.
    assert together[0].tolist() != together[5].tolist() and together[1].tolist() != together[4].tolist()


def test_from_checkpoints_and_bad_task_names(tiny, prompts, tmp_path):
    base, tokenizer = tiny
    for name, prompt in prompts.items():
        model = SoftPromptModel(copy.deepcopy(base), prompt, base_id="builtin:tiny-gpt2")
        model.save_prompt(tmp_path / name, task=name)
    multi = MultiPromptModel.from_checkpoints(base, {n: tmp_path / n for n in prompts}, base_id="builtin:tiny-gpt2")
    assert multi.names == ["qna", "sum", "tx"]
    assert multi.lengths.tolist() == [4, 6, 3]
    assert torch.equal(multi.prompts[2, 3:], prompts["tx"]) and not multi.prompts[2, :3].any()
    batch = generation_batch(_ids(tokenizer, SOURCES[:2]), tokenizer.pad_token_id)
    with pytest.raises(SoftPromptError, match="no prompt named bogus; this model has qna, sum, tx"):
        multi.generate(**batch, tasks=["qna", "bogus"], **GREEDY)
    with pytest.raises(SoftPromptError, match="1 task names for a batch of 2 rows"):
        multi.generate(**batch, tasks=["qna"], **GREEDY)
    with pytest.raises(SoftPromptError, match="trained on base model 'builtin:tiny-gpt2', not 'gpt2'"):
        load_prompts(base, [tmp_path / "qna"], base_id="gpt2")


def test_an_ensemble_of_one_equals_the_prompt_alone_and_stops_at_eos(tiny, prompts):
    base, tokenizer = tiny
    batch = generation_batch(_ids(tokenizer, SOURCES), tokenizer.pad_token_id)
    model = SoftPromptModel(base, prompts["sum"])
    free = model.generate(**batch, **GREEDY)
    # Stop on a token row 0 produces mid-way, so rows end at different steps.
    eos = free[0, 4].item()
    stopping = dict(max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
    expected = model.generate(**batch, **stopping)
    ours = ensemble_generate(
        base, [prompts["sum"]], **batch, max_new_tokens=12, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id
    )
    assert ours.tolist() == expected.tolist()
    assert (ours[0, 5:] == tokenizer.pad_token_id).all() and ours[0, :5].tolist() == free[0, :5].tolist()
    no_stop = ensemble_generate(base, [prompts["sum"]], **batch, max_new_tokens=12, eos_token_id=None)
    assert no_stop.tolist() == free.tolist()


def test_ensemble_averages_log_probs_and_is_deterministic(tiny, prompts):
    base, tokenizer = tiny
    batch = generation_batch(_ids(tokenizer, SOURCES), tokenizer.pad_token_id)
    three = list(prompts.values())
    a = ensemble_generate(base, three, **batch, max_new_tokens=10, eos_token_id=None)
    assert a.tolist() == ensemble_generate(base, three, **batch, max_new_tokens=10, eos_token_id=None).tolist()
    # The first token is the argmax of the mean of the three prompts' log-probabilities, each computed alone.
    with torch.no_grad():
        logits = [SoftPromptModel(base, p)(**batch, return_logits=True).logits[:, -1] for p in three]
    logprobs = [F.log_softmax(x, -1) for x in logits]
    assert a[:, 0].tolist() == torch.stack(logprobs).mean(0).argmax(-1).tolist()
    # K copies of one prompt are that prompt.
    one = ensemble_generate(base, [prompts["qna"]], **batch, max_new_tokens=10, eos_token_id=None)
    copies = ensemble_generate(base, [prompts["qna"]] * 3, **batch, max_new_tokens=10, eos_token_id=None)
    assert copies.tolist() == one.tolist()
    assert a.tolist() != one.tolist()  # and the ensemble is not just its first prompt
