"""Our p_tuning / prefix_tuning models beside PEFT's, with the same initial weights, for the exactness tests
(tests/unit/test_methods_peft.py runs one variant per method, tests/integration/test_methods_peft_all.py all of
them on two families)."""

import copy

import pytest
import torch
from peft import PrefixTuningConfig, PromptEncoderConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from softprompt.builtin import builtin_path
from softprompt.config import Encoder
from softprompt.data import training_batch
from softprompt.p_tuning import PTuningModel
from softprompt.prefix import PrefixEncoder, PrefixModel
from softprompt.prompt_encoders import PromptEncoder

P = 3
PAIRS = [
    ("Article: The council met on Tuesday to vote.\nSummary:", " Council votes ."),
    ("Context: The river runs east.\nQuestion: Where does the river run?\nAnswer:", " east"),
    ("Bulgarian: Заседанието е открито.\nEnglish:", " The sitting is open ."),
]


def tiny_llama():
    """(tiny random Llama with grouped-query attention, the built-in tokenizer), as tests/unit/test_families.py."""
    tokenizer = AutoTokenizer.from_pretrained(builtin_path("builtin:tiny-gpt2"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.requires_grad_(False), tokenizer


def pair(method: str, base, scale: float = 1.0):
    """(PEFT model, ours) with the same initial encoder weights (PEFT's own random init, the output layer times
    `scale`: a larger prompt moves greedy tokens, so the generation tests see a dropped layer)."""
    torch.manual_seed(1)
    if method.startswith("p_tuning"):
        kind = method.split("-")[1]
        cfg = PromptEncoderConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=P,
            encoder_reparameterization_type=kind.upper(),
            encoder_hidden_size=16,
        )
    else:
        cfg = PrefixTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=P,
            prefix_projection=method.endswith("projection"),
            encoder_hidden_size=16,
        )
    theirs = get_peft_model(copy.deepcopy(base), cfg)
    theirs.eval()
    encoder = theirs.prompt_encoder["default"]
    last = (
        encoder.transform[2]
        if hasattr(encoder, "transform")
        else encoder.mlp_head[-1]
        if hasattr(encoder, "mlp_head")
        else encoder
    )
    with torch.no_grad():
        for p in last.parameters() if last is not encoder else [encoder.embedding.weight]:
            p.mul_(scale)
    state = encoder.state_dict()
    if method.startswith("p_tuning"):
        encoder = PromptEncoder(state["embedding.weight"], Encoder(kind), hidden=16)
        ours = PTuningModel(copy.deepcopy(base), encoder)
    else:
        layers, width = theirs.peft_config["default"].num_layers, theirs.peft_config["default"].token_dim
        if method.endswith("projection"):
            encoder = PrefixEncoder(layers, width, init_inputs=state["embedding.weight"], hidden=16)
        else:
            encoder = PrefixEncoder(layers, width, init_kv=state["embedding.weight"])
        ours = PrefixModel(copy.deepcopy(base), encoder)
    ours.encoder.load_state_dict(state)
    return theirs, ours


def batch_of(tokenizer):
    rows = [{"source_ids": tokenizer(s)["input_ids"], "target_ids": tokenizer(t)["input_ids"]} for s, t in PAIRS]
    return training_batch(rows, tokenizer.pad_token_id)  # right-padded, the layout PEFT and ours share


def peft_loss(theirs, batch):
    return theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss


def check_loss_and_adamw_steps(method: str, base, tokenizer) -> None:
    """The same loss as PEFT's at each of 4 AdamW steps on both, then the same weights."""
    theirs, ours = pair(method, base)
    batch = batch_of(tokenizer)
    theirs_params = list(theirs.prompt_encoder["default"].parameters())
    # eps 1e-6 rather than 1e-8: a weight whose gradient is ~1e-10 (pure rounding: the two sum the batch's
    # gradient in another order) would otherwise take an Adam step of order lr in a direction set by that noise.
    opt_a = torch.optim.AdamW(theirs_params, lr=1e-2, eps=1e-6)
    opt_b = torch.optim.AdamW(ours.trainable_parameters(), lr=1e-2, eps=1e-6)
    for step in range(4):
        a, b = peft_loss(theirs, batch), ours(**batch).loss
        assert b.item() == pytest.approx(a.item(), abs=1e-5), f"step {step}"
        for opt, loss in ((opt_a, a), (opt_b, b)):
            opt.zero_grad()
            loss.backward()
            opt.step()
    for (name, x), y in zip(
        theirs.prompt_encoder["default"].named_parameters(), ours.trainable_parameters(), strict=True
    ):
        torch.testing.assert_close(y, x, atol=1e-5, rtol=0, msg=name)
    # Teeth: the method's prompt moves the loss, so a dropped layer or a skipped encoder would show.
    plain = ours.base(**{k: batch[k] for k in ("input_ids", "attention_mask")}, labels=batch["labels"]).loss
    assert abs(plain.item() - b.item()) > 1e-3


def peft_greedy(theirs, ids: torch.Tensor, steps: int) -> list[int]:
    """Greedy tokens from PEFT's own forward pass over the whole sequence at each step (no cache).

    Not PEFT's generate: with transformers 5.25, PEFT 0.21.2's KV-cached generate departs from its own forward
    after the first new token, for p_tuning and for prefix_tuning (docs/methods.md), while its forward agrees
    with ours (the loss test above).
    """
    out = []
    with torch.no_grad():
        for _ in range(steps):
            logits = theirs(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            out.append(int(logits[0, -1].argmax()))
            ids = torch.cat([ids, torch.tensor([[out[-1]]])], dim=1)
    return out
