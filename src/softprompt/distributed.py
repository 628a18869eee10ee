"""torch.distributed plumbing for `torchrun` (a no-op in a single process).

    torchrun --nproc_per_node 4 scripts/train.py --config configs/sum.yaml

Each rank takes its share of every global batch from the same seeded order
(see `split_batches`), gradients are averaged by DistributedDataParallel (with
train.strategy: fsdp, by fsdp.average_prompt_grad), and only rank 0 prints,
logs, draws progress bars and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init(device_name: str, timeout_minutes: float = 60.0) -> tuple[Dist, str]:
    """Join the process group if launched by torchrun; returns (Dist, device name for this rank).

    timeout_minutes bounds every collective, the barrier too: on a first run the other ranks wait there
    while rank 0 downloads the model and dataset and tokenises it, which can take far longer than
    PyTorch's default of 10 minutes.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_name
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    else:
        device_name = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=timeout_minutes)
        )
    return Dist(rank, world, local_rank), device_name


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


@contextlib.contextmanager
def rank0_first(d: Dist):
    """Rank 0 runs the block first (builds caches), the others after it, reading them."""
    if not d.main:
        barrier(d)
    yield
    if d.main:
        barrier(d)


def split_batches(batches: list[list[int]], d: Dist, accum: int) -> tuple[list[list[int]], int]:
    """This rank's micro-batches of the epoch: of each run of world × accum micro-batches, the rank's `accum`.

    A single process with grad_accum_steps = world × accum steps over exactly
    the same global batches. A last incomplete global batch is dropped (every
    rank must take part in each gradient average); returns (micro-batches, dropped).
    """
    if not d.enabled:
        return batches, 0
    group = d.world * accum
    usable = len(batches) // group * group
    mine = [b for g in range(0, usable, group) for b in batches[g + d.rank * accum : g + (d.rank + 1) * accum]]
    return mine, len(batches) - usable


def global_index(micro_batch: int, d: Dist, accum: int) -> int:
    """Where this rank's `micro_batch`-th micro-batch of the epoch is in the single-process order (see
    `split_batches`): the number the log's "Step" shows."""
    if not d.enabled:
        return micro_batch
    group, k = divmod(micro_batch, accum)
    return group * d.world * accum + d.rank * accum + k


def round_indices(micro_batch: int, d: Dist, accum: int) -> list[int]:
    """The global indices every rank runs at its `micro_batch`-th micro-batch (rank order): one per rank."""
    return [global_index(micro_batch, Dist(r, d.world), accum) for r in range(d.world)]


def all_sum(value: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        value = value.clone()
        dist.all_reduce(value)
    return value


def all_max(value: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def all_min(value: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value


def broadcast_json(value, d: Dist, device="cpu"):
    """Rank 0's JSON-able value on every rank (sent as UTF-8 bytes: nothing is unpickled).

    `device`: where the bytes travel (NCCL moves only CUDA tensors).
    """
    if not d.enabled:
        return value
    data = json.dumps(value).encode() if d.main else b""
    size = torch.tensor([len(data)], dtype=torch.long, device=device)
    dist.broadcast(size, src=0)
    if d.main:
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
    else:
        buf = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(buf, src=0)
    return json.loads(bytes(buf.cpu().tolist()).decode())


def broadcast_tensor(value: torch.Tensor | None, shape, dtype: torch.dtype, device, d: Dist) -> torch.Tensor:
    """Rank 0's tensor on every rank (the others pass None and get a copy of the given shape and dtype)."""
    out = value.to(device) if d.main else torch.empty(shape, dtype=dtype, device=device)
    if d.enabled:
        dist.broadcast(out, src=0)
    return out
