"""The memory table's counts: fake tensors count what real ones do, sizes match the models, scaling is linear."""

import pytest
from transformers import GPT2Config, LlamaConfig

from softprompt.memory import footprint, memory_table, model_configs

SMALL_GPT2 = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=500, n_positions=128)
SMALL_LLAMA = LlamaConfig(
    hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=500, max_position_embeddings=128,
)  # fmt: skip


@pytest.mark.parametrize("config", [SMALL_GPT2, SMALL_LLAMA], ids=["gpt2", "llama"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_fake_tensors_count_what_a_real_step_saves(config, dtype):
    fake = footprint(config, dtype, batch=2, length=48, targets=8, fake=True)
    real = footprint(config, dtype, batch=2, length=48, targets=8, fake=False)
    assert fake == real
    assert fake.activation_bytes > 0


def test_parameter_counts_are_the_models_own():
    from transformers import GPT2LMHeadModel

    f = footprint(model_configs()["gpt2"], "fp32", batch=1, length=16, targets=4)
    assert f.parameters == sum(p.numel() for p in GPT2LMHeadModel(GPT2Config()).parameters()) == 124_439_808
    assert f.weights("fp32") == 4 * f.parameters and f.weights("bf16", world=8) == 2 * f.parameters // 8
    assert f.root_parameters + 12 * f.block_parameters == f.parameters


def test_activations_grow_linearly_with_the_batch_and_checkpointing_keeps_less():
    # Per-row activations plus a batch-independent part (Llama's rotary cos/sin): exactly affine in the batch.
    one, two, four = (footprint(SMALL_LLAMA, "bf16", batch=b, length=64, targets=8).activation_bytes for b in (1, 2, 4))
    assert four - two == 2 * (two - one) > 0
    f = footprint(SMALL_LLAMA, "bf16", batch=1, length=64, targets=8)
    assert f.block_activation_bytes < f.checkpointed_bytes < f.activation_bytes


def test_the_table_has_a_row_per_model():
    table = memory_table(world=8, batch=1, length=32)
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == list(model_configs())
