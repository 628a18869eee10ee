"""Data-parallel evaluation under torchrun: each rank decodes a share of the batches, rank 0 receives them all.

    torchrun --nproc_per_node 4 scripts/evaluate.py --task sum

Every rank holds the whole frozen base model and the prompt(s), plans the
single process's batches and decodes every world-th of them
(generation.share_of). After each batch the ranks exchange what they decoded
(one round: one batch, or "done", or an error, per rank), and rank 0 alone
hands the rows on (evaluate.py streams them to its partial file). Predictions
travel as UTF-8 JSON in uint8 tensors over the process group (all_gather:
gloo on CPU, nccl on CUDA); nothing is pickled.

    with process_group(cfg) as d:          # scripts/evaluate.py: join the group, evaluate, leave it
        value = on_every_rank(load, d, device)  # load() on every rank, rank 0 first (it fills the caches)
        rows = gather_predictions(functools.partial(predict, ..., share=(d.rank, d.world)), d, device)
        value = on_main(write, d, device)      # write() on rank 0 alone; None on the other ranks

A step that can fail on one rank alone (reading a checkpoint, loading data,
writing results, generating) runs through these helpers, which tell every
rank: all of them stop, the failing rank with its own exception and the others
with a SoftPromptError carrying its message, instead of waiting at the next
collective until the process group's timeout. In a single process each helper
just calls its function.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from . import distributed
from .config import Config
from .distributed import Dist
from .errors import SoftPromptError, first_line
from .generation import OnBatch

T = TypeVar("T")


@contextlib.contextmanager
def process_group(cfg: Config):
    """Under torchrun: join the ranks' process group for the evaluations in the block, and leave it after.

    Yields this process's Dist (rank 0 of 1 in a single process). `evaluate` and `evaluate_all` join the group
    themselves when called outside this block, but only the block leaves it.
    """
    d, _ = distributed.init(cfg.train.device, cfg.train.dist_timeout_minutes)
    try:
        yield d
    finally:
        distributed.shutdown(d)


def all_gather_json(value: Any, d: Dist, device: torch.device | str = "cpu") -> list[Any]:
    """Every rank's JSON-able value, in rank order, on every rank (UTF-8 bytes, padded to the longest)."""
    if not d.enabled:
        return [value]
    data = json.dumps(value).encode()
    size = torch.tensor([len(data)], dtype=torch.long, device=device)
    sizes = [torch.empty_like(size) for _ in range(d.world)]
    dist.all_gather(sizes, size)
    lengths = [int(s.item()) for s in sizes]
    buf = torch.zeros(max(lengths), dtype=torch.uint8)
    buf[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    bufs = [torch.empty_like(buf, device=device) for _ in range(d.world)]
    dist.all_gather(bufs, buf.to(device))
    return [json.loads(b[:n].cpu().numpy().tobytes().decode()) for b, n in zip(bufs, lengths, strict=True)]


def _describe(err: Exception, d: Dist) -> str:
    """What the other ranks say of this rank's error: a user-facing message as it is, anything else with its rank."""
    if isinstance(err, SoftPromptError):
        return str(err)
    return f"rank {d.rank} failed with {type(err).__name__}: {first_line(err)}"


def _raise_any(problems: list[str | None], err: Exception | None) -> None:
    """After an exchange: this rank's own exception if it had one, else the first other rank's message."""
    if err is not None:
        raise err
    for problem in problems:
        if problem is not None:
            raise SoftPromptError(problem)


def stop_together(err: Exception | None, d: Dist, device) -> None:
    """Every rank says whether it failed; if one did, every rank raises (see the module docstring)."""
    if d.enabled:
        _raise_any(all_gather_json(None if err is None else _describe(err, d), d, device), err)
    elif err is not None:
        raise err


def _attempt(fn: Callable[[], T]) -> tuple[T | None, Exception | None]:
    try:
        return fn(), None
    except Exception as err:  # handed to stop_together, which raises it again on this rank after telling the others
        return None, err


def on_every_rank(fn: Callable[[], T], d: Dist, device) -> T:
    """fn() on every rank, rank 0 first (it builds the model and data caches the others read); fails on all or none."""
    if not d.enabled:
        return fn()
    result, err = _attempt(fn) if d.main else (None, None)
    stop_together(err, d, device)  # the other ranks wait here, as at a barrier
    if not d.main:
        result, err = _attempt(fn)
    stop_together(err, d, device)
    return result  # type: ignore[return-value]


def on_main(fn: Callable[[], T], d: Dist, device) -> T | None:
    """fn() on rank 0 alone (writing files); None on the other ranks, which stop too if it fails."""
    if not d.enabled:
        return fn()
    result, err = _attempt(fn) if d.main else (None, None)
    stop_together(err, d, device)
    return result


def generate_together(generate: Callable[[OnBatch], Any], on_main_batch: OnBatch | None, d: Dist, device) -> None:
    """generate(on_batch=...) on every rank, each decoding its share; on rank 0, on_main_batch gets all the batches.

    One round follows each batch: every rank sends its rows, "done" once its share is finished, or its error.
    Rank 0 hands each round's batches to on_main_batch in rank order; a rank that has finished keeps joining
    rounds until every rank has. In a single process: generate(on_batch=on_main_batch).
    """
    if not d.enabled:
        generate(on_batch=on_main_batch)
        return
    exchanging = False  # an exception raised while exchanging is one every rank has seen: nothing more to tell

    def exchange(mine: dict[str, Any], err: Exception | None = None) -> bool:
        nonlocal exchanging
        exchanging = True
        got = all_gather_json(mine, d, device)
        _raise_any([g.get("error") for g in got], err)
        problem = None
        if d.main:
            _, problem = _attempt(lambda: [on_main_batch(*g["rows"]) for g in got if "rows" in g])
        stop_together(problem, d, device)  # rank 0 could not write them (a full disk): all stop
        exchanging = False
        return all(g.get("done") for g in got)

    try:
        generate(on_batch=lambda idx, texts: exchange({"rows": [idx, texts]}))
    except Exception as err:
        if not exchanging:
            exchange({"error": _describe(err, d)}, err)
        raise
    while not exchange({"done": True}):
        pass


def gather_predictions(generate: Callable[[OnBatch], Any], d: Dist, device) -> dict[int, str]:
    """{row: prediction} of every rank's share on rank 0 (empty on the others); see generate_together."""
    rows: dict[int, str] = {}
    generate_together(generate, lambda idx, texts: rows.update(zip(idx, texts, strict=True)), d, device)
    return rows
