"""Score a trained soft prompt, or a baseline without one, on a task's evaluation split.

    metrics = evaluate(load_config("configs/smoke/qna.yaml"))                  # latest checkpoint
    metrics = evaluate(cfg, baseline="hard")     # the init words as plain text instead of the prompt
    print(summary_line(metrics))   # qna | validation | n=10 | EM 0.00 | F1 3.21 | checkpoint epoch_010

Generation is batched and greedy by default (beam search with num_beams > 1):
sources are sorted by length so a batch holds similar lengths, left-padded,
and decoded with the KV cache; every row stops at EOS or at its token limit.
A prediction is the new text up to EOS, cut at the first newline for qna and
tx (not sum: CNN/DailyMail highlights are newline-separated sentences), and
stripped. Scores come from `metrics.score`.

Results go to <results_dir>/<run>/<split>/ (a baseline to <split>-baseline-hard/
or <split>-baseline-none/, so it never overwrites the prompt's):

    metrics.json        scores, checkpoint and epoch, base model, n, decoding settings, timings, versions
    predictions.jsonl   one line per example: index, source, references, prediction

Token limits: by default a row may generate min(task.max_new_tokens,
data.max_target_tokens) new tokens -- the source budget reserves exactly
data.max_target_tokens positions, so that is all the context window has room
for. For tx a row's limit is also at most ceil(1.5 x its source length): a
translation is about as long as its source. The limit is per row (not per
batch), so a prediction does not depend on which rows share its batch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import latest_checkpoint
from .config import Config, Precision
from .data import generation_batch, load_task_data
from .errors import SoftPromptError
from .hub import context_window
from .metrics import score
from .model import SoftPromptModel, build_model, read_prompt
from .tasks import Task, get_task
from .train import autocast, pick_device

BASELINES = ("hard", "none")
TX_LENGTH_RATIO = 1.5
"""tx rows generate at most this many tokens per source token (before the task's bound)."""
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
_VERSIONED = ("torch", "transformers", "datasets", "tokenizers", "rouge-score", "sacrebleu")


def predict(
    model: SoftPromptModel,
    tokenizer,
    sources: list[list[int]],
    task: Task,
    batch_size: int,
    max_new_tokens: int | list[int],
    num_beams: int = 1,
    use_prompt: bool = True,
    device: torch.device | None = None,
    precision: Precision = Precision.FP32,
    progress: bool = True,
) -> list[str]:
    """Predictions for token-id sources, in the order given.

    max_new_tokens is one limit for all rows or one per row. With use_prompt
    False the base model reads the sources alone (the baselines put their
    text prefix into the sources themselves).
    """
    if not sources:
        return []
    limits = [max_new_tokens] * len(sources) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(limits) != len(sources):
        raise ValueError(f"{len(limits)} token limits for {len(sources)} sources")
    device = device or next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    # Longest first: similar lengths share a batch, and running out of memory shows up at once.
    order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    out: list[str | None] = [None] * len(sources)
    model.eval()
    for idx in tqdm(batches, desc=f"generating {task.name}", leave=False, dynamic_ncols=True,
                    disable=True if not progress else None):
        batch = generation_batch([sources[i] for i in idx], pad)
        batch = {k: v.to(device) for k, v in batch.items()}
        kwargs = dict(max_new_tokens=max(limits[i] for i in idx), num_beams=num_beams, do_sample=False,
                      eos_token_id=eos, pad_token_id=pad)
        with autocast(device, precision):
            if use_prompt:
                new = model.generate(batch["input_ids"], batch["attention_mask"], **kwargs)
            else:
                # From input_ids HF generate returns input + new tokens and takes position ids from the mask.
                new = model.base.generate(**batch, **kwargs)[:, batch["input_ids"].shape[1] :]
        for row, i in zip(new.tolist(), idx):
            out[i] = _decode(row[: limits[i]], tokenizer, eos, task.stop_at_newline)
    return out  # type: ignore[return-value]


def _decode(ids: list[int], tokenizer, eos: int, stop_at_newline: bool) -> str:
    if eos in ids:
        ids = ids[: ids.index(eos)]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if stop_at_newline:
        text = text.split("\n", 1)[0]
    return text.strip()


def token_limits(task: Task, cfg: Config, sources: list[list[int]], max_new_tokens: int | None) -> list[int]:
    """Per-row generation limits (see the module docstring); an explicit max_new_tokens is used as given."""
    room = cfg.data.max_target_tokens
    if max_new_tokens is not None:
        if max_new_tokens > room:
            raise SoftPromptError(
                f"--max-new-tokens {max_new_tokens} is more than data.max_target_tokens ({room}) of {cfg.source}, "
                "the room the source budget leaves in the context window; raise data.max_target_tokens with --set"
            )
        return [max_new_tokens] * len(sources)
    bound = min(task.max_new_tokens, room)
    if task.name == "tx":
        return [max(1, min(bound, math.ceil(TX_LENGTH_RATIO * len(s)))) for s in sources]
    return [bound] * len(sources)


def resolve_checkpoint(cfg: Config, checkpoint: str | Path | None) -> Path:
    """The checkpoint to score: the one given, else the run's latest; a clear error if there is none."""
    train_cmd = f"python scripts/train.py --config {cfg.source}"
    if checkpoint is None:
        found = latest_checkpoint(cfg.run_dir)
        if found is None:
            raise SoftPromptError(f"no checkpoint in {cfg.run_dir}; train one first with: {train_cmd}")
        return found
    path = Path(checkpoint)
    if not path.is_dir():
        raise SoftPromptError(f"checkpoint {path} not found; checkpoints of this config are made by: {train_cmd}")
    return path


def results_path(results_dir: str | Path, cfg: Config, split: str, baseline: str | None) -> Path:
    return Path(results_dir) / cfg.run_name / (split if baseline is None else f"{split}-baseline-{baseline}")


def evaluate(
    cfg: Config,
    checkpoint: str | Path | None = None,
    split: str | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    num_beams: int = 1,
    baseline: str | None = None,
    results_dir: str | Path = "results",
    progress: bool = True,
) -> dict[str, Any]:
    """Generate, score and write results (see the module docstring); returns what metrics.json holds.

    Defaults: the run's latest checkpoint, the task's evaluation split, all its
    examples, train.eval_batch_size rows a batch, the per-task token limits.
    """
    started = time.perf_counter()
    task = get_task(cfg.task)
    split = split or task.eval_split
    _check_arguments(checkpoint, limit, batch_size, max_new_tokens, num_beams, baseline)
    batch_size = batch_size or cfg.train.eval_batch_size
    ckpt = resolve_checkpoint(cfg, checkpoint) if baseline is None else None
    if ckpt is not None:
        _, prompt_meta = read_prompt(ckpt)  # fails fast on a bad checkpoint, before the model loads
        if prompt_meta.get("task", cfg.task) != cfg.task:
            raise SoftPromptError(f"{ckpt}: the prompt was trained for task '{prompt_meta['task']}', not '{cfg.task}'")

    device = pick_device(cfg.train.device)
    model, tokenizer = build_model(cfg.model, seed=cfg.train.seed)
    model.to(device)
    epoch, prefix = None, []
    if ckpt is not None:
        epoch = model.load_prompt(ckpt).get("epoch")
        prefix_len = model.prompt_length
    else:
        # The hard baseline's prefix sits where the soft prompt would: after any padding, before the source.
        words = cfg.model.init_text or task.init_words
        prefix = tokenizer(words, add_special_tokens=False)["input_ids"] if baseline == "hard" else []
        prefix_len = len(prefix)

    data_cfg, window = _room_for_prefix(cfg, context_window(model.base), prefix_len)
    data = load_task_data(data_cfg, tokenizer, window, splits=(split,))
    ds = data.splits[split]
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    if len(ds) == 0:
        raise SoftPromptError(f"the {split} split of {cfg.source} holds no examples")
    sources = list(ds["source_ids"])
    limits = token_limits(task, cfg, sources, max_new_tokens)

    gen_start = time.perf_counter()
    predictions = predict(
        model, tokenizer, [prefix + s for s in sources], task, batch_size, limits, num_beams,
        use_prompt=ckpt is not None, device=device, precision=cfg.train.precision, progress=progress,
    )
    gen_time = time.perf_counter() - gen_start
    records = list(ds)
    references = [task.references(r) for r in records]
    scores = score(task.name, predictions, references if task.name == "qna" else [r[0] for r in references])

    out_dir = results_path(results_dir, cfg, split, baseline)
    metrics = {
        "task": task.name,
        "split": split,
        "n": len(predictions),
        "scores": scores,
        "checkpoint": str(ckpt) if ckpt is not None else None,
        "epoch": epoch,
        "baseline": baseline,
        "config": cfg.source,
        "run_name": cfg.run_name,
        "base_model": cfg.model.name_or_path,
        "decoding": {
            "strategy": "greedy" if num_beams == 1 else "beam",
            "num_beams": num_beams,
            "batch_size": batch_size,
            "max_new_tokens": max(limits),
            "max_new_tokens_rule": _limit_rule(task, cfg, max_new_tokens),
            "stop_at_newline": task.stop_at_newline,
            "prefix": tokenizer.decode(prefix) if baseline == "hard" else None,
            "source_budget": data.source_budget,
            "sources_cut": data.truncated_sources[split],
            "precision": cfg.train.precision.value,
        },
        "device": _device_name(device),
        "generation_s": round(gen_time, 3),
        "examples_per_s": round(len(predictions) / gen_time, 3) if gen_time > 0 else None,
        "wall_time_s": round(time.perf_counter() - started, 3),
        "versions": _versions(),
        "results_dir": str(out_dir),
    }
    _write_results(out_dir, metrics, tokenizer, sources, references, predictions)
    return metrics


def summary_line(metrics: dict[str, Any]) -> str:
    """`tx | test | n=500 | BLEU 12.34 | chrF 40.00 | checkpoint epoch_010` (or `| baseline hard`)."""
    s = metrics["scores"]
    if metrics["task"] == "qna":
        parts = [f"EM {s['exact_match']:.2f}", f"F1 {s['f1']:.2f}"]
    elif metrics["task"] == "sum":
        names = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}
        parts = [f"{label} {s[key]:.2f}" for key, label in names.items()]
    else:
        parts = [f"BLEU {s['bleu']:.2f}", f"chrF {s['chrf']:.2f}"]
    if metrics["baseline"] is not None:
        origin = f"baseline {metrics['baseline']}"
    else:
        origin = f"checkpoint {Path(metrics['checkpoint']).name}"
    return " | ".join([metrics["task"], metrics["split"], f"n={metrics['n']}", *parts, origin])


# ---------------------------------------------------------------- helpers


def _check_arguments(checkpoint, limit, batch_size, max_new_tokens, num_beams, baseline) -> None:
    problems = []
    if baseline is not None and baseline not in BASELINES:
        problems.append(f"--baseline must be one of {', '.join(BASELINES)}, got '{baseline}'")
    if baseline is not None and checkpoint is not None:
        problems.append("--baseline and --checkpoint exclude each other: a baseline uses no trained prompt")
    for name, value in (("--limit", limit), ("--batch-size", batch_size), ("--max-new-tokens", max_new_tokens),
                        ("--num-beams", num_beams)):
        if value is not None and value < 1:
            problems.append(f"{name} must be at least 1, got {value}")
    if problems:
        raise SoftPromptError("; ".join(problems))


def _room_for_prefix(cfg: Config, window: int, prefix_len: int) -> tuple[Config, int]:
    """(config, window) for tokenising so that a prefix of prefix_len tokens fits where the prompt would.

    A prefix no longer than model.prompt_length leaves the sources exactly as
    training cut them; a longer one (the hard baseline's words can take more
    tokens than there are prompt vectors) shortens the source budget by the difference.
    """
    extra = max(0, prefix_len - cfg.model.prompt_length)
    if extra and cfg.data.max_source_tokens is not None:
        if cfg.data.max_source_tokens - extra < 8:
            raise SoftPromptError(
                f"{cfg.source}: data.max_source_tokens ({cfg.data.max_source_tokens}) leaves no room for a "
                f"{prefix_len}-token prefix"
            )
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_source_tokens=cfg.data.max_source_tokens - extra))
    return cfg, window - extra


def _limit_rule(task: Task, cfg: Config, max_new_tokens: int | None) -> str:
    if max_new_tokens is not None:
        return f"{max_new_tokens} (given)"
    bound = min(task.max_new_tokens, cfg.data.max_target_tokens)
    rule = f"min(task default {task.max_new_tokens}, data.max_target_tokens {cfg.data.max_target_tokens}) = {bound}"
    if task.name == "tx":
        rule = f"min({bound}, ceil({TX_LENGTH_RATIO} x source tokens)) per row, where {bound} = {rule}"
    return rule


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"softprompt": __version__, "python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _write_results(out_dir: Path, metrics, tokenizer, sources, references, predictions) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        with (out_dir / PREDICTIONS_FILE).open("w", encoding="utf-8") as f:
            for i, (src, refs, pred) in enumerate(zip(sources, references, predictions)):
                row = {"index": i, "source": tokenizer.decode(src), "references": refs, "prediction": pred}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    except OSError as err:
        raise SoftPromptError(f"cannot write results to {out_dir} ({err.strerror})") from err
