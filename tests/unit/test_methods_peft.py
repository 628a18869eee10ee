"""p_tuning and prefix_tuning equal PEFT's own models to 1e-5 in fp32: the same loss at each of 4 AdamW steps, then
the same weights, for one variant of each method on tiny GPT-2. Every variant, a second family and generation are
in tests/integration/test_methods_peft_all.py."""

import pytest

from peft_pairs import check_loss_and_adamw_steps


@pytest.mark.parametrize("method", ["p_tuning-mlp", "prefix-projection"])
def test_same_loss_then_same_weights_after_four_adamw_steps(method, tiny):
    check_loss_and_adamw_steps(method, *tiny)
