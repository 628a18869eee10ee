"""Other model families through the same code: Llama-style and GPT-NeoX tiny random models.

Each is built from its config (hidden 64, 2 layers, the built-in tokenizer),
saved with save_pretrained into a folder, and loaded the way a user's config
would load it (model.name_or_path: that folder). Llama uses rotary positions,
RMSNorm and grouped-query attention, GPT-NeoX rotary positions on part of
each head and parallel residuals: nothing of GPT-2's absolute positions.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoXConfig, LlamaConfig

from softprompt.builtin import builtin_path
from softprompt.config import ModelConfig
from softprompt.data import generation_batch, training_batch
from softprompt.hub import context_window, load_base
from softprompt.model import SoftPromptModel, build_model
from softprompt.multi import ensemble_generate

FAMILIES = {
    "llama": (LlamaConfig, "LlamaForCausalLM", dict(num_key_value_heads=2)),
    "gpt_neox": (GPTNeoXConfig, "GPTNeoXForCausalLM", {}),
}
PAIRS = [
    ("Article: The council met on Tuesday to vote.\nSummary:", " Council votes ."),
    ("Bulgarian: Заседанието е открито.\nEnglish:", " The sitting is open ."),
    ("Context: The river runs east.\nQuestion: Where does the river run?\nAnswer:", " east"),
]


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(family name, folder holding a saved tiny random model of that family and the built-in tokenizer)."""
    config_cls, _, extra = FAMILIES[request.param]
    tokenizer = AutoTokenizer.from_pretrained(builtin_path("builtin:tiny-gpt2"))
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=256,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.2,  # peaked logits: greedy output varies and no near-ties make the comparison flaky
        **extra,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return request.param, folder


def _cfg(folder, **kw):
    return ModelConfig(name_or_path=str(folder), prompt_length=4, init_text="summarize shorten distill short", **kw)


def test_loads_from_a_folder_as_that_family(family):
    name, folder = family
    base, tokenizer = load_base(_cfg(folder))
    assert type(base).__name__ == FAMILIES[name][1]
    assert base.base_model is not base  # the backbone the target-only loss runs
    assert context_window(base) == 256
    assert tokenizer.pad_token_id == tokenizer.eos_token_id


def test_training_step_loss_and_gradients(family):
    _, folder = family
    model, tokenizer = build_model(_cfg(folder))
    rows = [
        {"source_ids": tokenizer(s)["input_ids"], "target_ids": tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]}
        for s, t in PAIRS
    ]
    batch = training_batch(rows, tokenizer.pad_token_id)
    loss = model(**batch).loss
    embeds, mask, _ = model._inputs(batch["input_ids"], batch["attention_mask"])
    labels = torch.nn.functional.pad(batch["labels"], (model.prompt_length, 0), value=-100)
    reference = model.base(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)

    before = {k: v.clone() for k, v in model.base.state_dict().items()}
    prompt0 = model.prompt.detach().clone()
    opt = torch.optim.AdamW([model.prompt], lr=0.01)
    loss.backward()
    assert all(p.grad is None for p in model.base.parameters())
    opt.step()
    assert not torch.equal(model.prompt.detach(), prompt0)
    assert all(torch.equal(v, before[k]) for k, v in model.base.state_dict().items())


def test_prompt_save_load_roundtrip(family, tmp_path):
    _, folder = family
    model, _ = build_model(_cfg(folder, init="random"))
    model.save_prompt(tmp_path / "p", task="sum")
    base, _ = load_base(_cfg(folder))
    other = SoftPromptModel(base, torch.zeros_like(model.prompt), base_id=str(folder))
    meta = other.load_prompt(tmp_path / "p")
    assert torch.equal(other.prompt.detach(), model.prompt.detach())
    assert meta["model_type"] == base.config.model_type


def test_batched_left_padded_generation_equals_one_at_a_time(family):
    _, folder = family
    model, tokenizer = build_model(_cfg(folder, init="vocab"), seed=3)
    sources = [tokenizer(s)["input_ids"] for s, _ in PAIRS] + [tokenizer("Article: short.")["input_ids"]]
    kwargs = dict(max_new_tokens=10, do_sample=False, eos_token_id=None)
    batch = generation_batch(sources, tokenizer.pad_token_id)
    together = model.generate(**batch, **kwargs)
    for i, source in enumerate(sources):
        alone = model.generate(**generation_batch([source], tokenizer.pad_token_id), **kwargs)
        assert together[i].tolist() == alone[0].tolist(), f"row {i}"
    assert len(set(together.flatten().tolist())) > 5  # not one repeated token: the check has teeth
    # The manual KV-cached loop of prompt ensembling positions tokens the same way (rotary here).
    ensembled = ensemble_generate(model.base, [model.prompt.detach()], **batch, max_new_tokens=10, eos_token_id=None)
    assert ensembled.tolist() == together.tolist()
