"""An optimizer's state as flat safetensors-ready tensors and back (checkpoints and pretraining resume).

tensors, groups = optimizer_tensors(opt)      # {"optim.<param index>.<exp_avg|exp_avg_sq|step>": tensor}
load_optimizer_tensors(opt, tensors, groups)  # ValueError/KeyError when they do not fit `opt`
"""

from __future__ import annotations

from typing import Any

import torch

PREFIX = "optim."


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """(tensors keyed optim.<param index>.<name>, the param groups as JSON-able dicts)."""
    state = optimizer.state_dict()
    tensors = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            tensors[f"{PREFIX}{pid}.{key}"] = value.detach().cpu() if torch.is_tensor(value) else torch.tensor(value)
    return tensors, state["param_groups"]


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups: list[dict[str, Any]]
) -> None:
    """Restore what optimizer_tensors saved (other keys in `tensors` are ignored)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(PREFIX):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
