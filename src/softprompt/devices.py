"""Where and in which precision the model runs: device choice and autocast, shared by train, evaluate and bench."""

from __future__ import annotations

import contextlib

import torch

from .config import Precision
from .errors import SoftPromptError

DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


def pick_device(name: str, storage: Precision = Precision.FP32) -> torch.device:
    """`auto` is CUDA when available, else CPU; asking for CUDA without one is a user error, not a crash.

    `storage` is model.dtype, checked against the device `auto` resolved to (see check_storage).
    """
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif name.startswith("cuda") and not torch.cuda.is_available():
        raise SoftPromptError(f"train.device is '{name}' but no CUDA device is available; use auto or cpu")
    else:
        device = torch.device(name)
    check_storage(device, storage)
    return device


def check_storage(device: torch.device, storage: Precision) -> None:
    """Refuse an fp16-stored base on a CPU. The config check sees only `train.device: cpu`; `auto` on a
    machine without CUDA resolves to the CPU only here, before anything is loaded."""
    if storage is Precision.FP16 and device.type == "cpu":
        raise SoftPromptError(
            "model.dtype fp16 needs a GPU, but the run would use the CPU (no CUDA device is available); "
            "use bf16 or fp32 there"
        )


def autocast(device: torch.device, precision: Precision):
    """bf16/fp16 autocast for the frozen model's matmuls; fp32 runs unchanged."""
    if precision is Precision.FP32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def device_name(device: torch.device) -> str:
    """The device as metrics.json records it: `cuda:0 (NVIDIA H100 80GB HBM3)`, or `cpu`."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
