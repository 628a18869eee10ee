"""Changes made in place to the frozen base model: the fused GELU and gradient checkpointing.

Both leave the base's function unchanged (the fused GELU up to float rounding) and change only its speed and
memory: `hub.load_base` fuses the GELU (model.fused_gelu), `train` turns on checkpointing
(train.gradient_checkpointing), `pretrain` and `memory` fuse it as prompt tuning does.

    fuse_gelu(base)               # gelu_new modules -> one fused tanh GELU each
    enable_checkpointing(base)    # every transformer block recomputes its activations in the backward pass
"""

from __future__ import annotations

import functools

import torch
import torch.utils.checkpoint
from torch import nn

from .errors import SoftPromptError


def fuse_gelu(base: nn.Module) -> nn.Module:
    """Swap every gelu_new module of `base` for the fused tanh GELU, in place; returns `base`.

    gelu_new computes 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) in eight element-wise ops, each keeping a
    [B, L, 4H] tensor for the backward pass; F.gelu(approximate="tanh") is the same formula as one op that keeps
    only its input (they differ by float rounding: at most ~5e-7 in fp32).
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for module in list(base.modules()):
        for name, child in module.named_children():
            if isinstance(child, NewGELUActivation):
                setattr(module, name, GELUTanh())
                swapped += 1
    if swapped and getattr(base.config, "activation_function", None) == "gelu_new":
        base.config.activation_function = "gelu_pytorch_tanh"  # what the modules now are, should it be saved
    return base


def transformer_blocks(base: nn.Module) -> list[nn.Module]:
    """The base's transformer blocks (what gradient checkpointing and FSDP act on), in order; [] if unknown."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer)]


def model_type(base: nn.Module) -> str:
    return getattr(base.config, "model_type", type(base).__name__)


def enable_checkpointing(base: nn.Module) -> int:
    """Recompute each transformer block's activations in the backward pass; returns how many blocks.

    Hugging Face's own switch (gradient_checkpointing_enable) acts only while a block is in training
    mode, and the frozen base stays in eval mode (dropout off), so it would silently do nothing. This
    wraps every block's forward in torch.utils.checkpoint whatever the mode, whenever autograd records.
    """
    blocks = transformer_blocks(base)
    if not blocks:
        raise SoftPromptError(
            f"train.gradient_checkpointing: no transformer blocks found in model type '{model_type(base)}'; "
            "set it to false"
        )
    for block in blocks:
        block.forward = functools.partial(_checkpointed, block.forward)
    return len(blocks)


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():  # evaluation and generation: nothing to save memory for
        return forward(*args, **kwargs)
    # Non-reentrant checkpointing takes keyword arguments and restores the RNG state, so dropout masks
    # (model.keep_dropout) are the same in the recomputation.
    return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
