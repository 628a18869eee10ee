"""p_tuning and prefix_tuning equal PEFT's own models, to 1e-5 in fp32, on tiny GPT-2 and a tiny Llama (GQA).

For each method (p_tuning mlp / lstm, prefix_tuning with and without projection) PEFT builds its model, ours
takes PEFT's initial encoder weights (the same module layout, so one state dict fits both), and then:
the same loss on a right-padded batch; after 4 AdamW steps on each, the same weights; greedy generation of
one unpadded example, the tokens of greedy decoding by PEFT's own forward (PEFT's generate is off, see
peft_greedy). Left padding is checked against our own single-row decoding instead,
since PEFT puts a p_tuning prompt before the pads and counts the pads in a prefix's positions (docs/methods.md).
The quick tier (tests/unit/test_methods_peft.py) runs the loss and AdamW test of p_tuning-mlp and
prefix-projection on GPT-2; this file runs every variant on both families, and the generation tests.
"""

import pytest
import torch

from peft_pairs import PAIRS, check_loss_and_adamw_steps, pair, peft_greedy, tiny_llama
from softprompt.data import generation_batch

METHODS = ["p_tuning-mlp", "p_tuning-lstm", "prefix", "prefix-projection"]


@pytest.fixture(scope="module")
def llama():
    return tiny_llama()


@pytest.fixture(params=["gpt2", "llama"])
def family(request, tiny, llama):
    return tiny if request.param == "gpt2" else llama


@pytest.mark.parametrize("method", METHODS)
def test_same_loss_then_same_weights_after_four_adamw_steps(method, family):
    check_loss_and_adamw_steps(method, *family)


@pytest.mark.parametrize("method", METHODS)
def test_kv_cached_generation_gives_the_tokens_of_peft_forward(method, family):
    base, tokenizer = family
    theirs, ours = pair(method, base, scale=10.0)
    kwargs = dict(max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=tokenizer.eos_token_id)
    for source, _ in PAIRS:
        ids = torch.tensor([tokenizer(source)["input_ids"]])
        new = ours.generate(ids, torch.ones_like(ids), **kwargs)
        assert new[0].tolist() == peft_greedy(theirs, ids, 8), source


@pytest.mark.parametrize("method", METHODS)
def test_batched_left_padded_generation_equals_each_row_alone(method, family):
    base, tokenizer = family
    _, ours = pair(method, base)
    sources = [tokenizer(s)["input_ids"] for s, _ in PAIRS] + [tokenizer("Article: short.")["input_ids"]]
    kwargs = dict(max_new_tokens=8, do_sample=False, eos_token_id=None)
    together = ours.generate(**generation_batch(sources, tokenizer.pad_token_id), **kwargs)
    for i, source in enumerate(sources):
        alone = ours.generate(**generation_batch([source], tokenizer.pad_token_id), **kwargs)
        assert together[i].tolist() == alone[0].tolist(), f"row {i}"
    beams = ours.generate(**generation_batch(sources, tokenizer.pad_token_id), **kwargs, num_beams=2)
    assert beams.shape[0] == len(sources)
