"""train.strategy: fsdp: the frozen base sharded over torchrun ranks with FSDP2 (`fully_shard`).

    torchrun --nproc_per_node 2 scripts/train.py --config configs/sum.yaml --set train.strategy=fsdp

Each transformer block is one FSDP unit and the whole SoftPromptModel is the root unit, holding the
rest (embeddings, final norm, LM head). A rank keeps 1/world of every unit's parameters and gathers a
unit whole only while it runs (its forward, then again in backward; the root from its forward to the end
of the backward), so it holds about 1/world of the base plus the root and one block. The root is the
SoftPromptModel, not the base, because its forward looks up the token embeddings the prompt goes in front
of: outside the root's forward those weights are shards (DTensors).

The prompt [P, H] is left out of sharding (`ignored_params`): every rank holds it whole, so the
optimizer, checkpoints and --resume see it exactly as in a single process, and `average_prompt_grad`
averages its gradient over ranks at the end of each accumulation group, as DistributedDataParallel does.

A sharded model's forward is a collective: every rank must run the same number of forwards.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from .distributed import Dist, all_sum
from .errors import SoftPromptError
from .model import SoftPromptModel, model_type, transformer_blocks


def shard(model: SoftPromptModel, d: Dist, device: torch.device) -> list[int]:
    """Shard model's base in place over the d.world ranks, onto `device`; returns how many of the base's
    parameters each rank holds (rank order). A collective: every rank calls it."""
    blocks = transformer_blocks(model.base)
    if not blocks:
        raise SoftPromptError(
            f"train.strategy: fsdp: no transformer blocks found in model type '{model_type(model.base)}' to "
            "shard; set train.strategy: ddp"
        )
    mesh = init_device_mesh(device.type, (d.world,))
    # fully_shard moves each unit to the device as it shards it, so no rank ever holds the whole base there.
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh, ignored_params={model.prompt})
    model.prompt.data = model.prompt.data.to(device)  # ignored parameters are not moved
    held = torch.zeros(d.world, dtype=torch.long, device=device)
    held[d.rank] = sum(p.to_local().numel() for p in model.base.parameters() if isinstance(p, DTensor))
    return all_sum(held, d).tolist()


def average_prompt_grad(model: SoftPromptModel, d: Dist) -> None:
    """The prompt's gradient summed over ranks and divided by their number: DistributedDataParallel's average."""
    grad = model.prompt.grad
    dist.all_reduce(grad)
    grad.div_(d.world)
