"""Where and in which precision the model runs: device choice and autocast, shared by train, evaluate and bench."""

from __future__ import annotations

import contextlib

import torch

from .config import Precision
from .errors import SoftPromptError


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else CPU; asking for CUDA without one is a user error, not a crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SoftPromptError(f"train.device is '{name}' but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: Precision):
    """bf16/fp16 autocast for the frozen model's matmuls; fp32 runs unchanged."""
    if precision is Precision.FP32:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision is Precision.BF16 else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
