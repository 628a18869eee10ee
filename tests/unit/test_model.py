"""SoftPromptModel against independent references: the HF model's own loss, PEFT's prompt tuning."""

import copy

import pytest
import torch
from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

from softprompt.data import generation_batch, training_batch
from softprompt.model import SoftPromptModel, init_prompt, read_prompt


def _batch(tokenizer, pairs):
    rows = [
        {"source_ids": tokenizer(s)["input_ids"], "target_ids": tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]}
        for s, t in pairs
    ]
    return training_batch(rows, tokenizer.pad_token_id)


PAIRS = [
    ("Article: The council met on Tuesday to vote.\nSummary:", " Council votes ."),
    ("Bulgarian: Заседанието е открито.\nEnglish:", " The sitting is open ."),
    ("Context: The river runs east.\nQuestion: Where does the river run?\nAnswer:", " east"),
]


@pytest.fixture()
def model(tiny):
    base, tokenizer = tiny
    prompt = init_prompt(base, tokenizer, "words", 4, "summarize shorten distill short")
    return SoftPromptModel(copy.deepcopy(base), prompt)


def test_only_the_prompt_trains_and_base_weights_stay_bit_identical(model, tiny):
    _, tokenizer = tiny
    before = {k: v.clone() for k, v in model.base.state_dict().items()}
    prompt0 = model.prompt.detach().clone()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["prompt"]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for _ in range(3):
        loss = model(**_batch(tokenizer, PAIRS)).loss
        loss.backward()
        assert all(p.grad is None for p in model.base.parameters())
        assert model.prompt.grad is not None and model.prompt.grad.abs().sum() > 0
        opt.step()
        opt.zero_grad()
    assert not torch.equal(model.prompt.detach(), prompt0)
    for k, v in model.base.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_target_only_loss_equals_the_hf_full_logits_loss(model, tiny):
    _, tokenizer = tiny
    batch = _batch(tokenizer, PAIRS)
    ours = model(**batch).loss
    embeds, mask, _ = model._inputs(batch["input_ids"], batch["attention_mask"])
    labels = torch.nn.functional.pad(batch["labels"], (model.prompt_length, 0), value=-100)
    reference = model.base(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
    assert ours.item() == pytest.approx(reference.item(), abs=1e-5)
    # and the gradients agree too
    g_ours = torch.autograd.grad(model(**batch).loss, model.prompt)[0]
    embeds, mask, _ = model._inputs(batch["input_ids"], batch["attention_mask"])
    g_ref = torch.autograd.grad(
        model.base(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss, model.prompt
    )[0]
    torch.testing.assert_close(g_ours, g_ref, atol=1e-6, rtol=1e-5)


def test_fused_gelu_default_matches_the_model_as_loaded(model):
    """model.fused_gelu (the default) swaps gelu_new for one fused op: same loss and prompt gradient to 1e-5."""
    from transformers.activations import GELUTanh, NewGELUActivation

    from softprompt.config import ModelConfig
    from softprompt.hub import load_base

    unfused, tokenizer = load_base(ModelConfig(name_or_path="builtin:tiny-gpt2", fused_gelu=False))
    acts = lambda m: [type(x) for x in m.modules() if isinstance(x, (GELUTanh, NewGELUActivation))]
    assert acts(unfused) == [NewGELUActivation] * unfused.config.n_layer
    assert acts(model.base) == [GELUTanh] * unfused.config.n_layer  # what the default loaded
    reference = SoftPromptModel(unfused, model.prompt.detach().clone())
    batch = _batch(tokenizer, PAIRS)
    ours, ref = model(**batch).loss, reference(**batch).loss
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)
    g_ours = torch.autograd.grad(ours, model.prompt)[0]
    g_ref = torch.autograd.grad(ref, reference.prompt)[0]
    torch.testing.assert_close(g_ours, g_ref, atol=1e-6, rtol=1e-5)


def test_words_init_is_one_mean_embedding_per_word(tiny):
    base, tokenizer = tiny
    table = base.get_input_embeddings().weight
    words = ["summarize", "shorten", "distill", "short"]
    prompt = init_prompt(base, tokenizer, "words", 4, " ".join(words))
    assert prompt.shape == (4, table.shape[1]) and prompt.dtype == torch.float32
    for i, w in enumerate(words):
        ids = tokenizer((" " if i else "") + w, add_special_tokens=False)["input_ids"]
        expected = sum(table[j] for j in ids) / len(ids)
        torch.testing.assert_close(prompt[i], expected.detach(), atol=1e-6, rtol=0)
    with pytest.raises(Exception, match="exactly prompt_length=5 words"):
        init_prompt(base, tokenizer, "words", 5, " ".join(words))


@pytest.mark.parametrize("length", [2, 9])  # truncated, and repeated
def test_text_init_equals_peft_text_init(tiny, length):
    base, tokenizer = tiny
    text = "summarize shorten distill short"
    peft_model = get_peft_model(
        copy.deepcopy(base),
        PromptTuningConfig(
            task_type="CAUSAL_LM",
            prompt_tuning_init=PromptTuningInit.TEXT,
            num_virtual_tokens=length,
            prompt_tuning_init_text=text,
            tokenizer_name_or_path=base.config._name_or_path,
        ),
    )
    theirs = peft_model.prompt_encoder["default"].embedding.weight.detach()
    ours = init_prompt(base, tokenizer, "text", length, text)
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_vocab_and_random_inits_are_seeded(tiny):
    base, tokenizer = tiny
    table = base.get_input_embeddings().weight.detach()
    a = init_prompt(base, tokenizer, "vocab", 6, seed=1)
    assert torch.equal(a, init_prompt(base, tokenizer, "vocab", 6, seed=1))
    assert not torch.equal(a, init_prompt(base, tokenizer, "vocab", 6, seed=2))
    assert all((table == row).all(-1).any() for row in a)  # every row is a vocabulary embedding
    r = init_prompt(base, tokenizer, "random", 6, seed=1)
    assert torch.equal(r, init_prompt(base, tokenizer, "random", 6, seed=1))
    assert r.std().item() == pytest.approx(table.std().item(), rel=0.5)


def test_five_adamw_steps_match_peft_prompt_tuning(tiny):
    base, tokenizer = tiny
    ours = SoftPromptModel(copy.deepcopy(base), init_prompt(base, tokenizer, "text", 5, "summarize shorten distill"))
    peft_model = get_peft_model(
        copy.deepcopy(base),
        PromptTuningConfig(
            task_type="CAUSAL_LM",
            prompt_tuning_init=PromptTuningInit.TEXT,
            num_virtual_tokens=5,
            prompt_tuning_init_text="summarize shorten distill",
            tokenizer_name_or_path=base.config._name_or_path,
        ),
    )
    peft_model.eval()  # dropout off, as ours
    peft_prompt = peft_model.prompt_encoder["default"].embedding.weight
    torch.testing.assert_close(ours.prompt.detach(), peft_prompt.detach(), atol=0, rtol=0)
    opt_a = torch.optim.AdamW([ours.prompt], lr=0.05)
    opt_b = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=0.05)
    batches = [_batch(tokenizer, PAIRS[:2]), _batch(tokenizer, PAIRS[1:]), _batch(tokenizer, PAIRS)]
    for step in range(5):
        batch = batches[step % len(batches)]
        la, lb = ours(**batch).loss, peft_model(**batch).loss
        assert la.item() == pytest.approx(lb.item(), abs=1e-5), f"step {step}"
        la.backward()
        lb.backward()
        opt_a.step()
        opt_b.step()
        opt_a.zero_grad()
        opt_b.zero_grad()  # noqa: E702
    torch.testing.assert_close(ours.prompt.detach(), peft_prompt.detach(), atol=1e-5, rtol=0)


def test_batched_left_padded_greedy_equals_one_at_a_time(tiny):
    base, tokenizer = tiny
    model = SoftPromptModel(base, init_prompt(base, tokenizer, "vocab", 4, seed=3))
    sources = [tokenizer(s)["input_ids"] for s, _ in PAIRS] + [tokenizer("Article: short.")["input_ids"]]
    kwargs = dict(max_new_tokens=12, do_sample=False, eos_token_id=None)
    batch = generation_batch(sources, tokenizer.pad_token_id)
    together = model.generate(**batch, **kwargs)
    alone = [model.generate(**generation_batch([s], tokenizer.pad_token_id), **kwargs)[0] for s in sources]
    assert together.shape == (len(sources), 12)  # new tokens only
    for i, a in enumerate(alone):
        assert together[i].tolist() == a.tolist(), f"row {i}"
    assert len(set(together.flatten().tolist())) > 3  # not one repeated token: the check has teeth


def test_prompt_save_load_roundtrip_and_mismatch_errors(model, tmp_path, tiny):
    base, tokenizer = tiny
    model.save_prompt(tmp_path / "p", task="sum")
    prompt, meta = read_prompt(tmp_path / "p")
    assert torch.equal(prompt, model.prompt.detach())
    assert meta["hidden_size"] == prompt.shape[1] and meta["task"] == "sum"
    other = SoftPromptModel(copy.deepcopy(base), torch.zeros(4, prompt.shape[1]))
    other.load_prompt(tmp_path / "p")
    assert torch.equal(other.prompt.detach(), prompt)
    wrong = SoftPromptModel(copy.deepcopy(base), torch.zeros(4, prompt.shape[1]), base_id="gpt2")
    with pytest.raises(Exception, match="trained on base model"):
        wrong.load_prompt(tmp_path / "p")


def test_gradient_checkpointing_recomputes_the_blocks_with_the_base_in_eval_mode(tiny):
    # The frozen base stays in eval mode (dropout off), where Hugging Face's own checkpointing switch does
    # nothing; ours must really recompute every block in the backward pass, and change no number.
    import copy

    from softprompt.surgery import enable_checkpointing

    base, tokenizer = tiny
    prompt = init_prompt(base, tokenizer, "vocab", 4, seed=3)
    rows = [
        {
            "source_ids": tokenizer("Article: the council met.\nSummary:")["input_ids"],
            "target_ids": tokenizer(" Council meets.")["input_ids"] + [tokenizer.eos_token_id],
        }
    ] * 2
    batch = training_batch(rows, tokenizer.pad_token_id)
    results = {}
    for checkpointing in (False, True):
        model = SoftPromptModel(copy.deepcopy(base), prompt)
        if checkpointing:
            assert enable_checkpointing(model.base) == model.base.config.n_layer
        model.train()
        calls = []
        # a pre-hook: recomputation stops early, once the last saved tensor is rebuilt, inside the MLP
        model.base.transformer.h[0].mlp.register_forward_pre_hook(lambda *a, calls=calls: calls.append(1))
        loss = model(**batch).loss
        loss.backward()
        results[checkpointing] = (len(calls), loss.detach(), model.prompt.grad.clone())
        assert not model.base.training  # dropout stays off
    assert results[False][0] == 1 and results[True][0] == 2  # the backward pass ran the block again
    torch.testing.assert_close(results[True][1], results[False][1], atol=1e-6, rtol=0)
    torch.testing.assert_close(results[True][2], results[False][2], atol=1e-6, rtol=0)
