"""Datasets for the three tasks: loading, checking, tokenising, batching.

Hub datasets and local JSON Lines files (same schema) both load through
`datasets.load_dataset`; local files are read once beforehand so a bad line is
reported with its file and line number. Tokenisation runs in `datasets.map`
(cached on disk) and produces, per example:

    source_ids  [S]  head + body (cut to the budget) + tail, S <= source budget
    target_ids  [T]  target tokens + EOS, T <= data.max_target_tokens

Batches are padded to their longest row only. Training rows are right-padded
(source, target, pads) with labels -100 everywhere but the target; generation
rows are left-padded sources. `Examples` holds one task's evaluation rows as
evaluation scores them: records, source ids and each row's token limit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import testing
from .config import SPLITS, Config
from .errors import SoftPromptError, first_line, offline_message
from .tasks import Task, record_problem


def samples_dir() -> Path:
    """data/samples/ of the repository: small hand-written files of each task in the Hub schema (the smoke data)."""
    return Path(__file__).resolve().parents[2] / "data" / "samples"


@dataclass
class TaskData:
    """Tokenised splits (datasets.Dataset each) and what tokenisation cut."""

    splits: dict[str, Any]
    source_budget: int
    truncated_sources: dict[str, int]
    truncated_targets: dict[str, int]


def source_budget(cfg: Config, window: int) -> int:
    """Source tokens allowed so that prompt + source + target fits the context window."""
    free = window - cfg.model.prompt_length - cfg.data.max_target_tokens
    if cfg.data.max_source_tokens is None:
        if free < 8:
            raise SoftPromptError(
                f"{cfg.source}: model.prompt_length ({cfg.model.prompt_length}) + data.max_target_tokens "
                f"({cfg.data.max_target_tokens}) leave {free} source tokens in the {window}-token context window"
            )
        return free
    if cfg.data.max_source_tokens > free:
        raise SoftPromptError(
            f"{cfg.source}: model.prompt_length + data.max_source_tokens + data.max_target_tokens = "
            f"{cfg.model.prompt_length + cfg.data.max_source_tokens + cfg.data.max_target_tokens}, "
            f"more than the model's {window}-token context window"
        )
    return cfg.data.max_source_tokens


def check_jsonl(path: Path, task: Task) -> int:
    """Read a local JSON Lines file once, raising on the first bad line; returns the record count.

    Lines are split on newline bytes and decoded one at a time, so a bad byte
    is reported with its line number, as is a line that is not JSON, not an
    object, or lacks a field the task needs.
    """
    if not path.is_file():
        raise SoftPromptError(f"data file not found: {path}" + (" (it is a directory)" if path.is_dir() else ""))
    count = 0
    try:
        f = path.open("rb")
    except OSError as err:
        raise SoftPromptError(f"cannot read data file {path} ({err.strerror})") from err
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise SoftPromptError(
                    f"{path}, line {lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                    "save the file as UTF-8"
                ) from err
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise SoftPromptError(
                    f"{path}, line {lineno}: not valid JSON ({err.msg} at column {err.colno})"
                ) from err
            except RecursionError as err:
                raise SoftPromptError(f"{path}, line {lineno}: JSON nested too deeply to read") from err
            # Valid UTF-8 holds no surrogates, but a \ud800 escape puts a lone one in a string: no tokenizer takes it.
            if "\\ud" in line.lower() and _has_lone_surrogate(record):
                raise SoftPromptError(
                    f"{path}, line {lineno}: a string holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), "
                    "which is not text"
                )
            problem = record_problem(task, record)
            if problem:
                raise SoftPromptError(f"{path}, line {lineno}: {problem} for task '{task.name}'")
            count += 1
    if count == 0:
        raise SoftPromptError(f"{path}: the file holds no records (an empty file, or blank lines only)")
    return count


def _has_lone_surrogate(record: Any) -> bool:
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except RecursionError:  # as deep as json.loads allows: left to the datasets reader
        pass
    return False


def load_raw(cfg: Config, splits: tuple[str, ...], cap_eval: bool = True) -> dict[str, Any]:
    """The requested splits as datasets.Dataset, with carving and subsets applied.

    A dataset without a validation or test split has them carved out of train whichever splits are
    asked for (when train is big enough), so training and evaluation see the same train split and no
    scored example was trained on. cap_eval False: validation/test are not cut to data.max_eval_examples
    (evaluation scores the whole split; the cap bounds only training's validation loss).
    """
    import datasets

    task = cfg.task
    if cfg.data.files:
        files = {split: Path(p) for split, p in cfg.data.files.items()}
        if "train" not in files:
            raise SoftPromptError(f"{cfg.source}: data.files must include a train file")
        for path in files.values():
            check_jsonl(path, task)
        try:
            dd = datasets.load_dataset("json", data_files={k: str(v) for k, v in files.items()})
        except Exception as err:  # pyarrow/datasets errors, e.g. a field whose type changes between lines
            if isinstance(err, MemoryError):
                raise
            cause = err
            for _ in range(10):  # datasets wraps the real reason in its own errors
                cause = cause.__cause__ or cause.__context__ or cause
            raise SoftPromptError(
                f"{', '.join(str(p) for p in files.values())}: the datasets library could not read these files as "
                f"one table ({first_line(cause)}); check that every field has the same type on every line"
            ) from err
    else:
        name = cfg.data.dataset or task.dataset
        config_name = cfg.data.dataset_config or task.dataset_config
        try:
            dd = datasets.load_dataset(name, config_name, revision=cfg.data.revision)
        except Exception as err:  # datasets raises many types for an unreachable Hub
            if isinstance(err, (KeyboardInterrupt, MemoryError)):
                raise
            raise SoftPromptError(offline_message("dataset", name, err)) from err
    dd = dict(dd)
    missing = [s for s in SPLITS[1:] if s not in dd]  # the held-out splits, which can be carved from train
    carved = sum({"validation": cfg.data.carve_validation, "test": cfg.data.carve_test}[s] for s in missing)
    # Carve whenever train is big enough, not only when a carved split is asked for: training must drop the
    # examples that evaluation will score. (A train split too small to carve trains as it is, and asking
    # for the split it lacks is the error it always was.)
    if missing and (any(s in splits for s in missing) or carved < len(dd["train"])):
        dd.update(_carve(dd["train"], cfg, missing))
    out = {}
    for split in splits:
        if split not in dd:
            raise SoftPromptError(f"the {task.name} dataset has no '{split}' split (it has {', '.join(dd)})")
        ds = dd[split]
        limit = cfg.data.max_train_examples if split == "train" else cfg.data.max_eval_examples if cap_eval else None
        if limit is not None and limit < len(ds):
            ds = ds.select(range(limit))
        out[split] = ds
    return out


def _carve(train, cfg: Config, missing: list[str]) -> dict[str, Any]:
    """Seeded, fixed validation/test splits carved from train (Europarl has only train).

    The carved examples are removed from train, so no example is trained and scored.
    """
    sizes = {"validation": cfg.data.carve_validation, "test": cfg.data.carve_test}
    held = sum(sizes[s] for s in missing)
    if held >= len(train):
        raise SoftPromptError(
            f"{cfg.source}: cannot carve {held} validation/test examples out of {len(train)} training examples; "
            "lower data.carve_validation / data.carve_test"
        )
    parts = train.train_test_split(test_size=held, seed=cfg.data.carve_seed, shuffle=True)
    out, start = {"train": parts["train"]}, 0
    for split in missing:
        out[split] = parts["test"].select(range(start, start + sizes[split]))
        start += sizes[split]
    return out


def _ids(tokenizer, text: str) -> list[int]:
    # verbose=False: long sources are expected here and cut below; no "longer than the maximum" warning.
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] if text else []


def encode_source(record: dict[str, Any], task: Task, tokenizer, budget: int) -> tuple[list[int], bool]:
    """(source ids, whether they were cut): head + body cut to the budget + tail, as training reads it."""
    head, body, tail = task.pieces(record)
    head_ids, body_ids, tail_ids = _ids(tokenizer, head), _ids(tokenizer, body), _ids(tokenizer, tail)
    room = budget - len(head_ids) - len(tail_ids)
    source = head_ids + body_ids[: max(room, 0)] + tail_ids
    cut = len(source) > budget or room < len(body_ids)
    return source[-budget:], cut  # [-budget:] only when head + tail alone overflow: keep the question end


def encode_example(record: dict[str, Any], task: Task, tokenizer, budget: int, max_target: int) -> dict[str, Any]:
    source, cut = encode_source(record, task, tokenizer, budget)
    target = _ids(tokenizer, task.target(record))
    target_cut = len(target) > max_target - 1
    target = target[: max_target - 1] + [tokenizer.eos_token_id]
    return {"source_ids": source, "target_ids": target, "source_cut": cut, "target_cut": target_cut}


def load_task_data(
    cfg: Config, tokenizer, window: int, splits: tuple[str, ...] = ("train", "validation"), cap_eval: bool = True
) -> TaskData:
    task = cfg.task
    budget = source_budget(cfg, window)
    raw = load_raw(cfg, splits, cap_eval)
    out, cut_src, cut_tgt = {}, {}, {}
    for split, ds in raw.items():
        encoded = ds.map(
            lambda r: encode_example(r, task, tokenizer, budget, cfg.data.max_target_tokens),
            desc=f"tokenising {split}",
        )
        out[split] = encoded.with_format(None)
        cut_src[split] = int(sum(encoded["source_cut"]))
        cut_tgt[split] = int(sum(encoded["target_cut"]))
    return TaskData(out, budget, cut_src, cut_tgt)


# ---------------------------------------------------------------- batches


def batch_order(
    lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool = False
) -> list[list[int]]:
    """Index batches for one epoch: a seeded shuffle, optionally grouped by length.

    The order depends only on (seed, epoch), so a resumed run replays it exactly.
    Grouping sorts each window of 50 batches by length (less padding) and then
    shuffles the batches, so lengths still mix across the epoch.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(len(lengths), generator=gen).tolist()
    if not group_by_length:
        return [perm[i : i + batch_size] for i in range(0, len(perm), batch_size)]
    window = batch_size * 50
    batches = []
    for start in range(0, len(perm), window):
        chunk = sorted(perm[start : start + window], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in shuffled]


def training_batch(rows: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (source + target) with labels on the target only.

    The label mask comes from lengths: with pad = EOS, masking `input_ids ==
    pad` would also hide the target's own EOS.
    """
    seqs = [r["source_ids"] + r["target_ids"] for r in rows]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, s) in enumerate(zip(rows, seqs, strict=False)):
        n_src = len(r["source_ids"])
        input_ids[i, : len(s)] = torch.tensor(s)
        labels[i, n_src : len(s)] = torch.tensor(r["target_ids"])
        mask[i, : len(s)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


@dataclass
class Examples:
    """One task's evaluation examples, tokenised with room for a prefix of a given length."""

    cfg: Config
    task: Task
    split: str
    records: list[dict[str, Any]]
    sources: list[list[int]]
    limits: list[int]
    source_budget: int
    sources_cut: int
    split_size: int
    sample: list[int] | None
    """The indices scored when a limit drew a sample; None: the whole split."""
    limit_rule: str
    """How `limits` were set, e.g. "data.max_target_tokens = 24" or "10 (given)"."""


def generation_batch(sources: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded sources, ready for SoftPromptModel.generate."""
    width = max(len(s) for s in sources)
    input_ids = torch.full((len(sources), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sources), width), dtype=torch.long)
    for i, s in enumerate(sources):
        if s:
            input_ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def build_batch(ds, idx: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """The training batch of `ds`'s rows `idx` (one Arrow read)."""
    cols = ds[idx]
    pairs = zip(cols["source_ids"], cols["target_ids"], strict=True)
    return training_batch([{"source_ids": s, "target_ids": t} for s, t in pairs], pad_id)


def iter_batches(ds, batches: list[list[int]], pad_id: int) -> Iterator[dict[str, torch.Tensor]]:
    """Training batches of `ds` in the given order, each counted by the test hooks (`testing.batch_built`)."""
    for idx in batches:
        yield testing.batch_built(build_batch(ds, idx, pad_id))


def lengths_of(ds) -> list[int]:
    return [len(s) + len(t) for s, t in zip(ds["source_ids"], ds["target_ids"], strict=False)]
