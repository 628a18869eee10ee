"""Score trained soft prompts, or a baseline without one, on a task's evaluation split.

    metrics = evaluate(load_config("configs/smoke/qna.yaml"))                  # latest checkpoint
    metrics = evaluate(cfg, baseline="hard")     # the init words as plain text instead of the prompt
    metrics = evaluate(cfg, baseline="text", prompt_text="reply with the place")   # any text, e.g. an oracle
    metrics = evaluate(cfg, ensemble=["checkpoints/qna-s1", "checkpoints/qna-s2"])   # prompt ensemble
    print(summary_line(metrics))   # qna | validation | n=10 | EM 0.00 | F1 3.21 | checkpoint epoch_010

    results = evaluate_all([load_config(f"configs/smoke/{t}.yaml") for t in ("qna", "sum", "tx")])
    print(speed_line(results))
    # speed | 3 tasks, n=30, batch 8 | one mixed pass 77.67 ex/s | separate runs 52.70 ex/s | 1.47x | 30/30 ...

Generation is batched and greedy by default (beam search with num_beams > 1):
sources are sorted by length so a batch holds similar lengths, left-padded,
and decoded with the KV cache; every row stops at EOS or at its token limit.
A prediction is the new text up to EOS, cut at the first newline for qna and
tx (not sum: CNN/DailyMail highlights are newline-separated sentences), and
stripped. Scores come from `metrics.score`.

Many tasks in one pass (`evaluate_all`, `evaluate.py --task all`): one frozen
base model (every config must name the same one), each task's latest
checkpoint as a named prompt of a MultiPromptModel, and one stream of all the
tasks' examples sorted by source length, so a batch mixes tasks and each row
gets its own task's prompt. Each row keeps its own task's token limit and
newline rule, so its prediction is the one a single-task run gives. As every
row of a batch decodes for the batch's longest limit, a row joins a batch only
where it has room for that limit in the context window (a qna source cut to
leave room for 24 new tokens does not share a batch with 64-token summaries). To
measure what the shared pass buys, the same examples are then generated again
by the three single-task `predict` calls in the same process, with the same
batch size, and both rates and their ratio are recorded.

Prompt ensembling (`evaluate(cfg, ensemble=[...])`, `--ensemble A B C`): the
listed checkpoints of one task (or run folders: their latest checkpoint) are
decoded together with `multi.ensemble_generate`, their next-token
log-probabilities averaged at every greedy step. Greedy only.

Results go to <results_dir>/<run>/<split>/ for a checkpoint, <split>-baseline-hard/,
-baseline-none/ or -baseline-text/ for a baseline, <split>-ensemble/ for an ensemble,
and <split>-all/ for each task of an --task all pass, so no mode overwrites another's:

    metrics.json        scores, checkpoint and epoch, base model, n, decoding settings, timings, versions
                        (an ensemble adds "ensemble": its members; an --task all pass adds "speed", the
                        comparison with separate runs, and its generation_s / examples_per_s are those
                        of the whole mixed stream)
    predictions.jsonl   one line per example: index, source, references, prediction

Token limits: by default a row may generate data.max_target_tokens new tokens:
training targets are cut to that length (EOS included), and the source budget
reserves exactly that many positions in the context window. The limit is per row
(not per batch), so a prediction does not depend on which rows share its batch.

What is scored: the whole split. data.max_eval_examples bounds only the
validation loss during training; `limit` scores a seeded random sample of the
split (SAMPLE_SEED), kept in the split's order, and metrics.json records its
indices and seed.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import random
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import __version__
from .checkpoint import STATE_META, latest_checkpoint, resolve_prompt_dir, verify
from .config import TASKS, Config, Precision
from .data import generation_batch, load_task_data
from .devices import autocast, pick_device
from .errors import SoftPromptError
from .hub import context_window
from .metrics import score
from .model import SoftPromptModel, build_model, read_prompt
from .multi import MultiPromptModel, ensemble_generate, load_prompts
from .tasks import Task, get_task

BASELINES = ("hard", "none", "text")
"""hard: the config's init words as text; none: no prefix; text: a text you give (e.g. the oracle instruction)."""
SAMPLE_SEED = 0
"""Seed of the random sample `--limit N` scores (recorded in metrics.json)."""
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
    ensemble: Sequence[torch.Tensor] | None = None,
) -> list[str]:
    """Predictions for token-id sources, in the order given.

    max_new_tokens is one limit for all rows or one per row. With use_prompt
    False the base model reads the sources alone (the baselines put their
    text prefix into the sources themselves). With `ensemble` (prompts [P_k, H])
    the model's own prompt is unused: the ensemble decodes greedily instead.
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    def generate(idx: list[int], batch: dict[str, torch.Tensor], limit: int) -> torch.Tensor:
        if ensemble is not None:
            return ensemble_generate(
                model.base,
                ensemble,
                batch["input_ids"],
                batch["attention_mask"],
                max_new_tokens=limit,
                eos_token_id=eos,
                pad_token_id=pad,
            )
        kwargs = dict(max_new_tokens=limit, num_beams=num_beams, do_sample=False, eos_token_id=eos, pad_token_id=pad)
        if use_prompt:
            return model.generate(batch["input_ids"], batch["attention_mask"], **kwargs)
        # From input_ids HF generate returns input + new tokens and takes position ids from the mask.
        return model.base.generate(**batch, **kwargs)[:, batch["input_ids"].shape[1] :]

    model.eval()
    device = device or next(model.parameters()).device
    limits = _per_row(max_new_tokens, sources)
    rows = _generate_batched(
        sources,
        limits,
        _length_batches(sources, batch_size),
        generate,
        pad,
        device,
        precision,
        desc=f"generating {task.name}",
        progress=progress,
    )
    return [_decode(row, tokenizer, eos, task.stop_at_newline) for row in rows]


def predict_mixed(
    model: MultiPromptModel,
    tokenizer,
    sources: list[list[int]],
    tasks: list[Task],
    batch_size: int,
    max_new_tokens: list[int],
    num_beams: int = 1,
    device: torch.device | None = None,
    precision: Precision = Precision.FP32,
    progress: bool = True,
) -> list[str]:
    """Predictions for a stream of several tasks' sources; row i uses the prompt named tasks[i].name.

    Batches mix tasks (sorted by source length only); each row keeps its own
    token limit and its own task's newline rule, so it reads as `predict` on
    that task alone would make it.
    """
    if len(tasks) != len(sources):
        raise ValueError(f"{len(tasks)} tasks for {len(sources)} sources")
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    def generate(idx: list[int], batch: dict[str, torch.Tensor], limit: int) -> torch.Tensor:
        return model.generate(
            batch["input_ids"],
            batch["attention_mask"],
            tasks=[tasks[i].name for i in idx],
            max_new_tokens=limit,
            num_beams=num_beams,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
        )

    device = device or model.prompts.device
    limits = _per_row(max_new_tokens, sources)
    # Every row of a batch decodes for the batch's longest limit, so each must have that much room left in the
    # context window after its prompt and source (a long qna source has room for 24 tokens, not sum's 64).
    window, lengths = context_window(model.base), model.lengths[model.task_index([t.name for t in tasks])].tolist()
    room = [window - p - len(s) for p, s in zip(lengths, sources, strict=False)]
    batches = _mixed_batches([len(s) for s in sources], limits, room, batch_size)
    rows = _generate_batched(
        sources, limits, batches, generate, pad, device, precision, desc="generating all tasks", progress=progress
    )
    return [_decode(row, tokenizer, eos, t.stop_at_newline) for row, t in zip(rows, tasks, strict=False)]


def _per_row(max_new_tokens: int | list[int], sources: list[list[int]]) -> list[int]:
    limits = [max_new_tokens] * len(sources) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(limits) != len(sources):
        raise ValueError(f"{len(limits)} token limits for {len(sources)} sources")
    return limits


def _length_batches(sources: list[list[int]], batch_size: int) -> list[list[int]]:
    # Longest first: similar lengths share a batch, and running out of memory shows up at once.
    order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _mixed_batches(lengths: list[int], limits: list[int], room: list[int], batch_size: int) -> list[list[int]]:
    """Batches of similar lengths, as _length_batches, in which every row has room for the batch's longest limit.

    Rows are taken longest first; each joins the first unfilled batch that
    stays within every member's room, else opens a new one.
    """
    filling: list[list[int]] = []
    full: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        batch = next((b for b in filling if min(room[j] for j in (*b, i)) >= max(limits[j] for j in (*b, i))), None)
        if batch is None:
            batch = []
            filling.append(batch)
        batch.append(i)
        if len(batch) == batch_size:
            filling.remove(batch)
            full.append(batch)
    return full + filling


def _generate_batched(
    sources: list[list[int]],
    limits: list[int],
    batches: list[list[int]],
    generate: Callable[[list[int], dict[str, torch.Tensor], int], torch.Tensor],
    pad: int,
    device: torch.device,
    precision: Precision,
    desc: str,
    progress: bool,
) -> list[list[int]]:
    """New token ids per source, each cut to its own limit, generated batch by batch (lists of indices)."""
    out: list[list[int] | None] = [None] * len(sources)
    for idx in tqdm(batches, desc=desc, leave=False, dynamic_ncols=True, disable=True if not progress else None):
        batch = generation_batch([sources[i] for i in idx], pad)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, precision):
            new = generate(idx, batch, max(limits[i] for i in idx))
        for row, i in zip(new.tolist(), idx, strict=False):
            out[i] = row[: limits[i]]
    return out  # type: ignore[return-value]


def _decode(ids: list[int], tokenizer, eos: int, stop_at_newline: bool) -> str:
    if eos in ids:
        ids = ids[: ids.index(eos)]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if stop_at_newline:
        text = text.split("\n", 1)[0]
    return text.strip()


def token_limits(cfg: Config, sources: list[list[int]], max_new_tokens: int | None) -> list[int]:
    """Per-row generation limits (see the module docstring); an explicit max_new_tokens is used as given."""
    room = cfg.data.max_target_tokens
    if max_new_tokens is not None:
        if max_new_tokens > room:
            raise SoftPromptError(
                f"--max-new-tokens {max_new_tokens} is more than data.max_target_tokens ({room}) of {cfg.source}, "
                "the room the source budget leaves in the context window; raise data.max_target_tokens with --set"
            )
        return [max_new_tokens] * len(sources)
    # Every target was trained at up to max_target_tokens (EOS included), so generation may use as many.
    return [room] * len(sources)


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
    if (path / STATE_META).is_file():  # a training checkpoint records its files' SHA-256: check them
        problem = verify(path)
        if problem:
            raise SoftPromptError(f"checkpoint {problem}")
    return path


def results_path(results_dir: str | Path, cfg: Config, split: str, variant: str | None = None) -> Path:
    """<results_dir>/<run>/<split>[-<variant>]: variant is baseline-hard, baseline-none, ensemble or all."""
    return Path(results_dir) / cfg.run_name / (split if variant is None else f"{split}-{variant}")


def config_paths(task: str | None, configs: Sequence[str] | None, config_dir: str | None) -> list[str]:
    """The config files a command line names: --task T, --task all, or one --config per task."""
    if (task is None) == (not configs):
        raise SoftPromptError("give either --task (qna, sum, tx or all) or --config FILE (repeatable)")
    if configs:
        if config_dir is not None:
            raise SoftPromptError("--config-dir goes with --task; --config names its file itself")
        return list(configs)
    folder = Path(config_dir or "configs")
    return [str(folder / f"{t}.yaml") for t in (TASKS if task == "all" else (task,))]


@dataclasses.dataclass
class _Examples:
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
    """The indices scored when --limit drew a sample; None: the whole split."""


def _load_examples(
    cfg: Config, tokenizer, window: int, prefix_len: int, split: str, limit: int | None, max_new_tokens: int | None
) -> _Examples:
    task = get_task(cfg.task)
    data_cfg, window = _room_for_prefix(cfg, window, prefix_len)
    data = load_task_data(data_cfg, tokenizer, window, splits=(split,), cap_eval=False)
    ds = data.splits[split]
    sample = None
    if limit is not None and limit < len(ds):
        sample = sample_indices(len(ds), limit)
        ds = ds.select(sample)
    if len(ds) == 0:
        raise SoftPromptError(f"the {split} split of {cfg.source} holds no examples")
    sources = list(ds["source_ids"])
    limits = token_limits(cfg, sources, max_new_tokens)
    return _Examples(
        cfg,
        task,
        split,
        list(ds),
        sources,
        limits,
        data.source_budget,
        data.truncated_sources[split],
        len(data.splits[split]),
        sample,
    )


def sample_indices(size: int, n: int, seed: int = SAMPLE_SEED) -> list[int]:
    """n of range(size), drawn with a fixed seed and kept in order (a split's first N can all share one topic)."""
    return sorted(random.Random(seed).sample(range(size), n))


def _prompt_meta(ckpt: Path, cfg: Config) -> dict[str, Any]:
    """The prompt's metadata; fails fast on a bad checkpoint or one of another task, before the model loads."""
    _, meta = read_prompt(ckpt)
    if meta.get("task", cfg.task) != cfg.task:
        raise SoftPromptError(f"{ckpt}: the prompt was trained for task '{meta['task']}', not '{cfg.task}'")
    return meta


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
    ensemble: Sequence[str | Path] | None = None,
    prompt_text: str | None = None,
) -> dict[str, Any]:
    """Generate, score and write results (see the module docstring); returns what metrics.json holds.

    Defaults: the run's latest checkpoint, the task's evaluation split, all its
    examples, train.eval_batch_size rows a batch, the per-task token limits.
    `ensemble`: checkpoints (or run folders) of this task decoded as one
    greedy prompt ensemble instead of one checkpoint.
    """
    started = time.perf_counter()
    task = get_task(cfg.task)
    split = split or cfg.data.eval_split or task.eval_split
    _check_arguments(checkpoint, limit, batch_size, max_new_tokens, num_beams, baseline, ensemble, prompt_text)
    batch_size = batch_size or cfg.train.eval_batch_size
    ckpt = resolve_checkpoint(cfg, checkpoint) if baseline is None and ensemble is None else None
    members = [resolve_prompt_dir(p) for p in ensemble] if ensemble is not None else []
    metas = [_prompt_meta(p, cfg) for p in ([ckpt] if ckpt is not None else members)]

    device = pick_device(cfg.train.device)
    model, tokenizer = build_model(cfg.model, seed=cfg.train.seed)
    model.to(device)
    prefix, prompts = [], None
    if ckpt is not None:
        model.load_prompt(ckpt)
        prefix_len = model.prompt_length
    elif members:
        prompts = load_prompts(model.base, members, base_id=cfg.model.name_or_path)
        prefix_len = max(p.shape[0] for p in prompts)  # the ensemble's stack is as long as its longest prompt
    else:
        prefix = baseline_prefix(cfg, tokenizer, baseline, prompt_text)
        prefix_len = len(prefix)
    ex = _load_examples(cfg, tokenizer, context_window(model.base), prefix_len, split, limit, max_new_tokens)

    gen_start = time.perf_counter()
    predictions = predict(
        model,
        tokenizer,
        [prefix + s for s in ex.sources],
        task,
        batch_size,
        ex.limits,
        num_beams,
        use_prompt=ckpt is not None,
        device=device,
        precision=cfg.train.precision,
        progress=progress,
        ensemble=prompts,
    )
    gen_time = time.perf_counter() - gen_start
    variant = f"baseline-{baseline}" if baseline is not None else "ensemble" if members else None
    extra = {}
    if members:
        extra["ensemble"] = [
            {"checkpoint": str(p), "epoch": m.get("epoch"), "prompt_length": int(t.shape[0])}
            for p, m, t in zip(members, metas, prompts, strict=False)
        ]
    return _finish(
        ex,
        predictions,
        tokenizer,
        results_path(results_dir, cfg, split, variant),
        checkpoint=ckpt,
        epoch=metas[0].get("epoch") if ckpt is not None else None,
        baseline=baseline,
        num_beams=num_beams,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        prefix=tokenizer.decode(prefix) if prefix else None,
        device=device,
        gen_time=gen_time,
        n_generated=len(predictions),
        started=started,
        extra=extra,
    )


def baseline_prefix(cfg: Config, tokenizer, baseline: str | None, prompt_text: str | None = None) -> list[int]:
    """Token ids a baseline puts where the soft prompt would sit (after any padding, before the source).

    hard: the config's init words, text: the given text; each followed by a newline, so the model
    reads "<words>\nContext: ..." rather than the words glued onto the source's first word.
    """
    if baseline == "hard":
        text = cfg.model.init_text or get_task(cfg.task).init_words
    elif baseline == "text":
        text = prompt_text
    else:
        return []
    return tokenizer(text + "\n", add_special_tokens=False)["input_ids"]


def evaluate_all(
    configs: Sequence[Config] | dict[str, Config],
    checkpoints: dict[str, str | Path] | None = None,
    split: str | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    num_beams: int = 1,
    results_dir: str | Path = "results",
    compare: bool = True,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Score several tasks' prompts in one pass over one frozen model; {task: metrics} (see the module docstring).

    Defaults: each task's latest checkpoint and evaluation split; the smallest
    train.eval_batch_size of the configs. `split`, `limit` and
    `max_new_tokens` apply to every task. compare=False skips the timing of
    the separate runs.
    """
    started = time.perf_counter()
    cfgs = _by_task(configs)
    _check_arguments(None, limit, batch_size, max_new_tokens, num_beams, None, None)
    _check_one_base(cfgs)
    checkpoints = checkpoints or {}
    if set(checkpoints) - set(cfgs):
        raise SoftPromptError(
            f"checkpoints given for {', '.join(sorted(set(checkpoints) - set(cfgs)))}, "
            f"which no config is for (tasks: {', '.join(cfgs)})"
        )
    ckpts = {t: resolve_checkpoint(cfg, checkpoints.get(t)) for t, cfg in cfgs.items()}
    metas = {t: _prompt_meta(ckpts[t], cfg) for t, cfg in cfgs.items()}
    batch_size = batch_size or min(cfg.train.eval_batch_size for cfg in cfgs.values())

    first = next(iter(cfgs.values()))
    device, precision = pick_device(first.train.device), first.train.precision
    model, tokenizer = build_model(first.model, seed=first.train.seed)
    model.to(device)
    base, base_id = model.base, first.model.name_or_path
    prompts = dict(zip(cfgs, load_prompts(base, list(ckpts.values()), base_id=base_id), strict=False))
    multi = MultiPromptModel(base, prompts, base_id=base_id)
    window = context_window(base)
    examples = {
        t: _load_examples(
            cfg,
            tokenizer,
            window,
            prompts[t].shape[0],
            split or cfg.data.eval_split or get_task(t).eval_split,
            limit,
            max_new_tokens,
        )
        for t, cfg in cfgs.items()
    }

    # One stream of every task's examples: (task, index within the task).
    stream = [(t, i) for t, ex in examples.items() for i in range(len(ex.sources))]
    sources = [examples[t].sources[i] for t, i in stream]
    tasks = [examples[t].task for t, _ in stream]
    limits = [examples[t].limits[i] for t, i in stream]
    # A short untimed warm-up, so one-time costs (kernels, caches) count against neither side of the comparison.
    warm = min(batch_size, len(sources))
    predict_mixed(
        multi,
        tokenizer,
        sources[:warm],
        tasks[:warm],
        batch_size,
        [1] * warm,
        num_beams,
        device,
        precision,
        progress=False,
    )
    gen_start = time.perf_counter()
    mixed = predict_mixed(multi, tokenizer, sources, tasks, batch_size, limits, num_beams, device, precision, progress)
    mixed_s = time.perf_counter() - gen_start
    per_task = {t: [p for (s, _), p in zip(stream, mixed, strict=False) if s == t] for t in cfgs}

    speed: dict[str, Any] = {
        "tasks": list(cfgs),
        "n": len(stream),
        "batch_size": batch_size,
        "mixed_s": round(mixed_s, 3),
        "mixed_examples_per_s": _rate(len(stream), mixed_s),
        "separate_s": None,
        "separate_examples_per_s": None,
        "ratio": None,
        "separate_equal": None,
    }
    if compare:
        separate_start = time.perf_counter()
        separate = {
            t: predict(
                SoftPromptModel(base, prompts[t].to(device), base_id=base_id),
                tokenizer,
                ex.sources,
                ex.task,
                batch_size,
                ex.limits,
                num_beams,
                device=device,
                precision=precision,
                progress=progress,
            )
            for t, ex in examples.items()
        }
        separate_s = time.perf_counter() - separate_start
        speed.update(
            separate_s=round(separate_s, 3),
            separate_examples_per_s=_rate(len(stream), separate_s),
            ratio=round(separate_s / mixed_s, 3) if mixed_s > 0 else None,
            separate_equal=sum(a == b for t in cfgs for a, b in zip(per_task[t], separate[t], strict=False)),
        )

    return {
        t: _finish(
            ex,
            per_task[t],
            tokenizer,
            results_path(results_dir, ex.cfg, ex.split, "all"),
            checkpoint=ckpts[t],
            epoch=metas[t].get("epoch"),
            baseline=None,
            num_beams=num_beams,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            prefix=None,
            device=device,
            gen_time=mixed_s,
            n_generated=len(stream),
            started=started,
            extra={"speed": speed},
        )
        for t, ex in examples.items()
    }


def summary_line(metrics: dict[str, Any]) -> str:
    """`tx | test | n=500 | BLEU 12.34 | chrF 40.00 | checkpoint epoch_010` (or `baseline hard`, `ensemble of 3`)."""
    s = metrics["scores"]
    if metrics["task"] == "qna":
        parts = [f"EM {s['exact_match']:.2f}", f"F1 {s['f1']:.2f}"]
    elif metrics["task"] == "sum":
        names = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}
        parts = [f"{label} {s[key]:.2f}" for key, label in names.items()]
    else:
        parts = [f"BLEU {s['bleu']:.2f}", f"chrF {s['chrf']:.2f}"]
    if metrics.get("ensemble"):
        origin = f"ensemble of {len(metrics['ensemble'])}"
    elif metrics["baseline"] is not None:
        origin = f"baseline {metrics['baseline']}"
    else:
        origin = f"checkpoint {Path(metrics['checkpoint']).name}"
    return " | ".join([metrics["task"], metrics["split"], f"n={metrics['n']}", *parts, origin])


def speed_line(results: dict[str, dict[str, Any]]) -> str:
    """One line comparing the mixed pass with separate runs, e.g.

        speed | 3 tasks, n=30, batch 8 | one mixed pass 9.10 ex/s | separate runs 7.40 ex/s | 1.23x | 30/30 ...

    The ratio is separate time / mixed time (above 1: the mixed pass is faster); "equal" counts the examples
    whose prediction the separate runs reproduce exactly.
    """
    s = next(iter(results.values()))["speed"]
    parts = [
        "speed",
        f"{len(s['tasks'])} tasks, n={s['n']}, batch {s['batch_size']}",
        f"one mixed pass {s['mixed_examples_per_s']:.2f} ex/s",
    ]
    if s["separate_s"] is not None:
        parts += [
            f"separate runs {s['separate_examples_per_s']:.2f} ex/s",
            f"{s['ratio']:.2f}x",
            f"{s['separate_equal']}/{s['n']} predictions equal",
        ]
    return " | ".join(parts)


# ---------------------------------------------------------------- helpers


def _check_arguments(
    checkpoint, limit, batch_size, max_new_tokens, num_beams, baseline, ensemble, prompt_text=None
) -> None:
    problems = []
    if baseline is not None and baseline not in BASELINES:
        problems.append(f"--baseline must be one of {', '.join(BASELINES)}, got '{baseline}'")
    if (baseline == "text") != (prompt_text is not None):
        problems.append("--baseline text and --prompt-text go together: the text is the baseline's prompt")
    elif prompt_text is not None and not prompt_text.strip():
        problems.append("--prompt-text must not be empty")
    if baseline is not None and checkpoint is not None:
        problems.append("--baseline and --checkpoint exclude each other: a baseline uses no trained prompt")
    if ensemble is not None:
        if not ensemble:
            problems.append("--ensemble needs at least one checkpoint")
        if checkpoint is not None or baseline is not None:
            problems.append("--ensemble excludes --checkpoint and --baseline: it names its own checkpoints")
        if num_beams is not None and num_beams > 1:
            problems.append(
                f"--ensemble decodes greedily (the prompts' log-probabilities are averaged at each "
                f"step); it cannot be combined with beam search (--num-beams {num_beams})"
            )
    for name, value in (
        ("--limit", limit),
        ("--batch-size", batch_size),
        ("--max-new-tokens", max_new_tokens),
        ("--num-beams", num_beams),
    ):
        if value is not None and value < 1:
            problems.append(f"{name} must be at least 1, got {value}")
    if problems:
        raise SoftPromptError("; ".join(problems))


def _by_task(configs: Sequence[Config] | dict[str, Config]) -> dict[str, Config]:
    """{task: config}, in the order given, with one config per task."""
    items = list(configs.items()) if isinstance(configs, dict) else [(c.task, c) for c in configs]
    if not items:
        raise SoftPromptError("no configs given")
    out: dict[str, Config] = {}
    for name, cfg in items:
        if name != cfg.task:
            raise SoftPromptError(f"{cfg.source} is a config for task '{cfg.task}', given as '{name}'")
        if name in out:
            raise SoftPromptError(f"two configs for task '{name}': {out[name].source} and {cfg.source}")
        out[name] = cfg
    return out


def _check_one_base(cfgs: dict[str, Config]) -> None:
    """All tasks share one frozen model: the configs must agree on it, its device and its precision."""
    fields = {
        "model.name_or_path": lambda c: c.model.name_or_path,
        "model.revision": lambda c: c.model.revision,
        "model.fused_gelu": lambda c: c.model.fused_gelu,
        "train.device": lambda c: c.train.device,
        "train.precision": lambda c: c.train.precision.value,
    }
    problems = []
    for key, get in fields.items():
        if len({get(c) for c in cfgs.values()}) > 1:
            named = ", ".join(f"{c.source or t}: {get(c)}" for t, c in cfgs.items())
            problems.append(f"{key} differs ({named})")
    if problems:
        raise SoftPromptError(
            "scoring several tasks in one pass needs one frozen base model, so the configs must "
            "agree on it: " + "; ".join(problems)
        )


def _finish(
    ex: _Examples,
    predictions: list[str],
    tokenizer,
    out_dir: Path,
    *,
    checkpoint: Path | None,
    epoch: int | None,
    baseline: str | None,
    num_beams: int,
    batch_size: int,
    max_new_tokens: int | None,
    prefix: str | None,
    device: torch.device,
    gen_time: float,
    n_generated: int,
    started: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Score one task's predictions, write metrics.json and predictions.jsonl; returns the metrics."""
    cfg, task = ex.cfg, ex.task
    references = [task.references(r) for r in ex.records]
    scores = score(task.name, predictions, references if task.name == "qna" else [r[0] for r in references])
    metrics = {
        "task": task.name,
        "split": ex.split,
        "n": len(predictions),
        "split_size": ex.split_size,
        "sample": {"seed": SAMPLE_SEED, "indices": ex.sample} if ex.sample is not None else None,
        "scores": scores,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "epoch": epoch,
        "baseline": baseline,
        "config": cfg.source,
        "run_name": cfg.run_name,
        "base_model": cfg.model.name_or_path,
        "decoding": {
            "strategy": "greedy" if num_beams == 1 else "beam",
            "num_beams": num_beams,
            "batch_size": batch_size,
            "max_new_tokens": max(ex.limits),
            "max_new_tokens_rule": _limit_rule(cfg, max_new_tokens),
            "stop_at_newline": task.stop_at_newline,
            "prefix": prefix,
            "source_budget": ex.source_budget,
            "sources_cut": ex.sources_cut,
            "precision": cfg.train.precision.value,
        },
        "device": _device_name(device),
        "generation_s": round(gen_time, 3),
        "examples_per_s": _rate(n_generated, gen_time),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "versions": _versions(),
        "results_dir": str(out_dir),
        **extra,
    }
    _write_results(out_dir, metrics, tokenizer, ex.sources, references, predictions)
    return metrics


def _rate(n: int, seconds: float) -> float | None:
    return round(n / seconds, 3) if seconds > 0 else None


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
        cfg = dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, max_source_tokens=cfg.data.max_source_tokens - extra)
        )
    return cfg, window - extra


def _limit_rule(cfg: Config, max_new_tokens: int | None) -> str:
    if max_new_tokens is not None:
        return f"{max_new_tokens} (given)"
    return f"data.max_target_tokens = {cfg.data.max_target_tokens}"


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
            for i, (src, refs, pred) in enumerate(zip(sources, references, predictions, strict=False)):
                row = {"index": i, "source": tokenizer.decode(src), "references": refs, "prediction": pred}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    except OSError as err:
        raise SoftPromptError(f"cannot write results to {out_dir} ({err.strerror})") from err
