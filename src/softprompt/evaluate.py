"""Score trained soft prompts, or a baseline without one, on a task's evaluation split; or all tasks in one pass.

    metrics = evaluate(load_config("configs/smoke/qna.yaml"))                  # latest checkpoint
    metrics = evaluate(cfg, baseline="hard")     # the init words as plain text instead of the prompt
    metrics = evaluate(cfg, baseline="text", prompt_text="reply with the place")   # any text, e.g. an oracle
    metrics = evaluate(cfg, ensemble=["checkpoints/qna-s1", "checkpoints/qna-s2"])   # prompt ensemble
    metrics = evaluate(cfg, decode=DecodeOptions(batch_size=4, max_new_tokens=16), limit=200)
    metrics = evaluate(cfg, resume=True)         # continue an interrupted evaluation from its partial file
    print(summary_line(metrics))   # qna | validation | n=10 | EM 0.00 | F1 3.21 | checkpoint epoch_010

    results = evaluate_all([load_config(f"configs/smoke/{t}.yaml") for t in TASKS], compare=True)
    print(speed_line(results))
    # speed | 3 tasks, n=30, batch 8 | one mixed pass 77.67 ex/s | separate runs 52.70 ex/s | 1.47x | 30/30 ...

This module decides what is scored and with which prompt; generation.py
decodes (batched, greedy by default, each row to its own token limit and its
task's stop rule) and results.py writes (metrics.json, predictions.jsonl, and
predictions.partial.jsonl while generating, which `resume=True` continues).
Scores come from the task's own metric (Task.score).

Many tasks in one pass (`evaluate_all`, `evaluate.py --task all`): one frozen
base model (every config must name the same one), each task's latest
checkpoint as a named prompt of a MultiPromptModel, and one stream of all the
tasks' examples sorted by source length, so a batch mixes tasks and each row
gets its own task's prompt, token limit and stop rule: its prediction is the
one a single-task run gives. A row joins a batch only where it has room for
the batch's longest limit in the context window. `compare=True`
(`--compare-speed`) then generates the same examples again by separate
single-task `predict` calls in the same process and records both rates.

Prompt ensembling (`ensemble=[...]`, `--ensemble A B C`): the listed checkpoints
of one task (or run folders: their latest checkpoint) are decoded together with
`multi.ensemble_generate`, their next-token log-probabilities averaged at every
greedy step. Greedy only.

Token limits: by default a row may generate Task.new_tokens(data.max_target_tokens)
new tokens, for every task so far data.max_target_tokens itself: training
targets are cut to that length (EOS included), and the source budget reserves
exactly that many positions in the context window.

Under torchrun (`torchrun --nproc_per_node N scripts/evaluate.py ...`, inside
parallel.process_group) every rank loads the whole frozen base and the prompts and
decodes every N-th batch of the single process's plan; rank 0 receives the
predictions after each round of batches, and alone writes, prints and tracks
(parallel.py). Its files are the single process's, apart from the timings and
metrics.json's `world_size`; the partial file too, so `resume` may continue
an evaluation on another number of ranks.

What is scored: the whole split. data.max_eval_examples bounds only the
validation loss during training; `limit` scores a seeded random sample of the
split (SAMPLE_SEED), kept in the split's order, and metrics.json records its
indices and seed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import distributed, parallel
from .checkpoint import STATE_META, latest_checkpoint, resolve_prompt_dir, sha256, verify
from .config import Config, Tracker
from .data import load_task_data
from .devices import pick_device
from .errors import SoftPromptError
from .generation import DecodeOptions, mixed_batches, predict, predict_mixed
from .hub import context_window
from .methods import build_for_prompt
from .model import PROMPT_FILE, SoftPromptModel, build_model, read_prompt
from .multi import MultiPromptModel, load_prompts
from .results import (
    SAMPLE_SEED,
    Examples,
    PartialPredictions,
    decoding,
    device_name,
    results_path,
    scored,
    versions,
    write_results,
)
from .tasks import get_task
from .tracking import add_scalars

__all__ = [
    "BASELINES",
    "SAMPLE_SEED",
    "DecodeOptions",
    "baseline_prefix",
    "evaluate",
    "evaluate_all",
    "mixed_batches",
    "predict",
    "resolve_checkpoint",
    "sample_indices",
    "speed_line",
    "summary_line",
    "token_limits",
]

BASELINES = ("hard", "none", "text")
"""hard: the config's init words as text; none: no prefix; text: a text you give (e.g. the oracle instruction)."""


def _ranks(cfg: Config) -> tuple[distributed.Dist, torch.device]:
    """This process's rank and device (under torchrun its own GPU, or the CPU), in the process group."""
    d, name = distributed.init(cfg.train.device, cfg.train.dist_timeout_minutes)
    return d, pick_device(name, cfg.model.dtype)


def token_limits(cfg: Config, sources: list[list[int]], max_new_tokens: int | None) -> list[int]:
    """Per-row generation limits (see the module docstring); an explicit max_new_tokens is used as given."""
    room = cfg.data.max_target_tokens
    if max_new_tokens is not None:
        if max_new_tokens > room:
            raise SoftPromptError(
                f"max_new_tokens {max_new_tokens} is more than data.max_target_tokens ({room}) of {cfg.source}, "
                "the room the source budget leaves in the context window; raise data.max_target_tokens"
            )
        return [max_new_tokens] * len(sources)
    return [min(room, cfg.task.new_tokens(room))] * len(sources)


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


def sample_indices(size: int, n: int, seed: int = SAMPLE_SEED) -> list[int]:
    """n of range(size), drawn with a fixed seed and kept in order (a split's first N can all share one topic)."""
    return sorted(random.Random(seed).sample(range(size), n))


def _load_examples(cfg: Config, tokenizer, window: int, prefix_len: int, split: str, limit: int | None, decode):
    """The split's examples (a seeded sample of `limit`), their sources cut to leave room for the prefix."""
    task = cfg.task
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
    given = decode.max_new_tokens
    limits = token_limits(cfg, sources, given)
    rule = f"data.max_target_tokens = {cfg.data.max_target_tokens}"
    if given is not None:
        rule = f"{given} (given)"
    elif limits[0] != cfg.data.max_target_tokens:
        rule = f"task {task.name}'s rule: {limits[0]} for {rule}"
    cut, size = data.truncated_sources[split], len(data.splits[split])
    return Examples(cfg, task, split, list(ds), sources, limits, data.source_budget, cut, size, sample, rule)


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


def _default_split(cfg: Config) -> str:
    return cfg.data.eval_split or cfg.task.eval_split


def _prompt_meta(ckpt: Path, cfg: Config) -> dict[str, Any]:
    """The prompt's metadata; fails fast on a bad checkpoint or one of another task, before the model loads."""
    _, meta = read_prompt(ckpt)
    if meta.get("task", cfg.task.name) != cfg.task.name:
        raise SoftPromptError(f"{ckpt}: the prompt was trained for task '{meta['task']}', not '{cfg.task.name}'")
    return meta


def _prompt_hash(ckpt: Path) -> str:
    """SHA-256 of the prompt a checkpoint holds (its prompt file; a PEFT adapter's tensor as read)."""
    if (ckpt / PROMPT_FILE).is_file():
        return sha256(ckpt / PROMPT_FILE)
    return hashlib.sha256(read_prompt(ckpt)[0].float().numpy().tobytes()).hexdigest()


def _check_choice(checkpoint, baseline, prompt_text, ensemble, decode: DecodeOptions, limit) -> None:
    """The library's own check of what to score (scripts/evaluate.py checks its flags before this)."""
    problems = []
    if baseline is not None and baseline not in BASELINES:
        problems.append(f"baseline must be one of {', '.join(BASELINES)}, got '{baseline}'")
    if (baseline == "text") != (prompt_text is not None) or (prompt_text is not None and not prompt_text.strip()):
        problems.append("baseline='text' needs a non-empty prompt_text, and prompt_text needs baseline='text'")
    if sum(x is not None for x in (checkpoint, baseline, ensemble)) > 1:
        problems.append("checkpoint, baseline and ensemble exclude each other")
    if ensemble is not None and (not ensemble or decode.num_beams > 1):
        problems.append(f"an ensemble needs one checkpoint or more and decodes greedily (num_beams {decode.num_beams})")
    if limit is not None and limit < 1:
        problems.append(f"limit must be at least 1, got {limit}")
    if problems:
        raise SoftPromptError("; ".join(problems))


@dataclasses.dataclass
class _Prompting:
    """What sits in front of the sources: one checkpoint's prompt, an ensemble's prompts, or a baseline's text."""

    ckpt: Path | None = None
    members: list[Path] = dataclasses.field(default_factory=list)
    metas: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    baseline: str | None = None
    prefix: list[int] = dataclasses.field(default_factory=list)
    prompts: list[torch.Tensor] | None = None

    @property
    def variant(self) -> str | None:
        return f"baseline-{self.baseline}" if self.baseline is not None else "ensemble" if self.members else None

    def origin(self) -> dict[str, Any]:
        epoch = self.metas[0].get("epoch") if self.ckpt is not None else None
        return {"checkpoint": str(self.ckpt) if self.ckpt else None, "epoch": epoch, "baseline": self.baseline}

    def members_record(self) -> list[dict[str, Any]]:
        """What metrics.json records of an ensemble: each member's checkpoint, epoch and prompt length."""
        return [
            {"checkpoint": str(p), "epoch": m.get("epoch"), "prompt_length": int(t.shape[0])}
            for p, m, t in zip(self.members, self.metas, self.prompts or [], strict=True)
        ]

    def identity(self) -> dict[str, Any]:
        """What the predictions depend on besides the data and decoding: the prompts' SHA-256, or the baseline."""
        return {
            "checkpoint_sha256": _prompt_hash(self.ckpt) if self.ckpt is not None else None,
            "ensemble_sha256": [_prompt_hash(p) for p in self.members],
            "baseline": self.baseline,
        }


def _choose(cfg: Config, checkpoint, baseline: str | None, ensemble) -> _Prompting:
    """The checkpoint (or ensemble members) to score, checked before the model loads; a baseline needs none."""
    how = _Prompting(baseline=baseline)
    if baseline is None and ensemble is None:
        how.ckpt = resolve_checkpoint(cfg, checkpoint)
    how.members = [resolve_prompt_dir(p) for p in ensemble or []]
    how.metas = [_prompt_meta(p, cfg) for p in ([how.ckpt] if how.ckpt is not None else how.members)]
    return how


def _load_prompting(model: SoftPromptModel, tokenizer, cfg: Config, how: _Prompting, prompt_text) -> int:
    """Put what `how` names into the model (or the ensemble's prompts, or the baseline's prefix); the prefix length."""
    if how.ckpt is not None:
        model.load_prompt(how.ckpt)
        return model.prompt_length
    if how.members:
        how.prompts = load_prompts(model.base, how.members, base_id=cfg.model.name_or_path)
        return max(p.shape[0] for p in how.prompts)  # the ensemble's stack is as long as its longest prompt
    how.prefix = baseline_prefix(cfg, tokenizer, how.baseline, prompt_text)
    return len(how.prefix)


def evaluate(
    cfg: Config,
    checkpoint: str | Path | None = None,
    *,
    baseline: str | None = None,
    prompt_text: str | None = None,
    ensemble: Sequence[str | Path] | None = None,
    split: str | None = None,
    limit: int | None = None,
    decode: DecodeOptions | None = None,
    results_dir: str | Path = "results",
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate, score and write results (see the module docstring); returns what metrics.json holds.

    Defaults: the run's latest checkpoint, the task's evaluation split, all its examples, DecodeOptions().
    Predictions stream to predictions.partial.jsonl as batches finish; resume=True continues that file
    (after checking it comes from the same prompt, data and decoding), and without it an existing one is refused.
    Under torchrun every rank calls this and gets the metrics; rank 0 owns the results folder and its partial file.
    """
    started = time.perf_counter()
    task = cfg.task
    decode = decode or DecodeOptions()
    _check_choice(checkpoint, baseline, prompt_text, ensemble, decode, limit)
    split = split or _default_split(cfg)
    opts = dataclasses.replace(decode, batch_size=decode.batch_size or cfg.train.eval_batch_size)
    d, device = _ranks(cfg)

    def load():
        how = _choose(cfg, checkpoint, baseline, ensemble)  # checked before the model loads
        # The prompt file's method decides the model (a prefix_tuning file needs per-layer keys/values).
        model, tokenizer = build_for_prompt(cfg.model, how.metas[0] if how.ckpt else {}, seed=cfg.train.seed)
        model.to(device)
        prefix_len = _load_prompting(model, tokenizer, cfg, how, prompt_text)
        ex = _load_examples(cfg, tokenizer, context_window(model.base), prefix_len, split, limit, opts)
        return how, model, tokenizer, ex

    # Rank 0 first: it builds the caches the others read. An error on any rank stops every rank.
    how, model, tokenizer, ex = parallel.main_first(load, d, device)
    out_dir = results_path(results_dir, cfg, split, how.variant)
    settings = decoding(ex, opts.batch_size, opts.num_beams, tokenizer.decode(how.prefix) if how.prefix else None)
    header = _header(ex, how, settings, limit)
    partial = parallel.on_main(lambda: PartialPredictions(out_dir, header, resume), d, device)  # rank 0 owns the file
    skip = set(distributed.broadcast_json(sorted(partial.done) if d.main else None, d, device))

    gen_start = time.perf_counter()
    sources = [how.prefix + s for s in ex.sources]
    flags = dict(use_prompt=how.ckpt is not None, ensemble=how.prompts, precision=cfg.train.precision)
    flags |= dict(progress=progress and d.main, skip=skip, share=(d.rank, d.world))
    generate = functools.partial(predict, model, tokenizer, sources, task, ex.limits, opts, **flags)
    parallel.generate_together(generate, partial.append if d.main else None, d, device)  # all rows on rank 0
    gen_time = time.perf_counter() - gen_start  # on rank 0: until every rank's last batch has arrived

    def finish() -> dict[str, Any]:
        predictions = [partial.done[i] for i in range(len(ex.sources))]
        metrics = scored(ex, predictions, how.origin(), settings)
        timings = _timings(device, d, gen_time, len(predictions) - len(skip), started)
        metrics.update(timings, results_dir=str(out_dir))
        if skip:
            metrics["resumed"] = len(skip)  # rows read back from the partial file; the timings are of the rest
        if how.members:
            metrics["ensemble"] = how.members_record()
        write_results(out_dir, metrics, ex, tokenizer, predictions)
        _track(cfg, Path(results_dir), out_dir.name, metrics, how)
        return metrics

    return distributed.broadcast_json(parallel.on_main(finish, d, device), d, device)


def _track(cfg: Config, results_dir: Path, variant: str, metrics: dict[str, Any], how: _Prompting) -> None:
    """With train.tracker: tensorboard, the scores join the training run's scalars as eval/<split>/<metric>,
    at the checkpoint's optimizer step (0 for a baseline), so TensorBoard shows them beside the loss curves."""
    if cfg.train.tracker is Tracker.NONE:
        return
    state = how.ckpt / STATE_META if how.ckpt is not None else None  # a PEFT adapter folder has none
    step = json.loads(state.read_text(encoding="utf-8")).get("global_step", 0) if state and state.is_file() else 0
    numbers = {k: v for k, v in metrics["scores"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    add_scalars(results_dir / cfg.run_name, {f"eval/{variant}/{k}": float(v) for k, v in numbers.items()}, step)


def _header(ex: Examples, how: _Prompting, settings: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """The partial file's first line: everything the predictions depend on, compared key by key on resume."""
    return {
        "task": ex.task.name,
        "base_model": ex.cfg.model.name_or_path,
        "split": ex.split,
        "split_size": ex.split_size,
        "limit": limit,
        "sample_seed": SAMPLE_SEED if ex.sample is not None else None,
        "n": len(ex.sources),
        **how.identity(),
        "decoding": {k: v for k, v in settings.items() if k != "sources_cut"},
    }


def _timings(device: torch.device, d, gen_time: float, n_generated: int, started: float) -> dict[str, Any]:
    return {
        "device": device_name(device),  # rank 0's, under torchrun
        "world_size": d.world,
        "generation_s": round(gen_time, 3),
        "examples_per_s": _rate(n_generated, gen_time),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "versions": versions(),
    }


def _rate(n: int, seconds: float) -> float | None:
    return round(n / seconds, 3) if seconds > 0 else None


def baseline_prefix(cfg: Config, tokenizer, baseline: str | None, prompt_text: str | None = None) -> list[int]:
    """Token ids a baseline puts where the soft prompt would sit (after any padding, before the source).

    hard: the config's init words, text: the given text; each followed by a newline, so the model
    reads "<words>\nContext: ..." rather than the words glued onto the source's first word.
    """
    if baseline == "hard":
        text = cfg.model.init_text or cfg.task.init_words
    elif baseline == "text":
        text = prompt_text
    else:
        return []
    return tokenizer(text + "\n", add_special_tokens=False)["input_ids"]


def evaluate_all(
    configs: Sequence[Config] | dict[str, Config],
    checkpoints: dict[str, str | Path] | None = None,
    *,
    split: str | None = None,
    limit: int | None = None,
    decode: DecodeOptions | None = None,
    results_dir: str | Path = "results",
    compare: bool = False,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Score several tasks' prompts in one pass over one frozen model; {task: metrics} (see the module docstring).

    Defaults: each task's latest checkpoint and evaluation split; the smallest train.eval_batch_size of the
    configs. `split`, `limit` and `decode` apply to every task. compare=True also times separate runs.
    """
    started = time.perf_counter()
    cfgs = _by_task(configs)
    decode = decode or DecodeOptions()
    _check_choice(None, None, None, None, decode, limit)
    _check_one_base(cfgs)
    checkpoints = checkpoints or {}
    if set(checkpoints) - set(cfgs):
        raise SoftPromptError(
            f"checkpoints given for {', '.join(sorted(set(checkpoints) - set(cfgs)))}, "
            f"which no config is for (tasks: {', '.join(cfgs)})"
        )
    opts = dataclasses.replace(
        decode, batch_size=decode.batch_size or min(c.train.eval_batch_size for c in cfgs.values())
    )
    first = next(iter(cfgs.values()))
    d, device = _ranks(first)
    precision, base_id = first.train.precision, first.model.name_or_path

    def load():
        ckpts = {t: resolve_checkpoint(cfg, checkpoints.get(t)) for t, cfg in cfgs.items()}
        metas = {t: _prompt_meta(ckpts[t], cfg) for t, cfg in cfgs.items()}
        model, tokenizer = build_model(first.model, seed=first.train.seed)
        model.to(device)
        prompts = dict(zip(cfgs, load_prompts(model.base, list(ckpts.values()), base_id=base_id), strict=True))
        multi, window = MultiPromptModel(model.base, prompts, base_id=base_id), context_window(model.base)
        examples = {
            t: _load_examples(cfg, tokenizer, window, prompts[t].shape[0], split or _default_split(cfg), limit, opts)
            for t, cfg in cfgs.items()
        }
        return ckpts, metas, tokenizer, prompts, multi, examples

    ckpts, metas, tokenizer, prompts, multi, examples = parallel.main_first(load, d, device)
    run = dict(precision=precision, progress=progress and d.main, d=d, device=device)
    per_task, speed = _mixed_pass(multi, tokenizer, examples, opts, **run)
    if compare:
        speed.update(_separate_runs(multi, prompts, tokenizer, examples, opts, per_task, speed, **run))

    def finish() -> dict[str, dict[str, Any]]:
        out = {}
        for t, ex in examples.items():
            out_dir = results_path(results_dir, ex.cfg, ex.split, "all")
            origin = {"checkpoint": str(ckpts[t]), "epoch": metas[t].get("epoch"), "baseline": None}
            metrics = scored(ex, per_task[t], origin, decoding(ex, opts.batch_size, opts.num_beams, None))
            timings = _timings(device, d, speed["mixed_s"], speed["n"], started)
            metrics.update(timings, results_dir=str(out_dir), speed=speed)
            write_results(out_dir, metrics, ex, tokenizer, per_task[t])
            out[t] = metrics
        return out

    return distributed.broadcast_json(parallel.on_main(finish, d, device), d, device)


def _mixed_pass(multi, tokenizer, examples: dict[str, Examples], opts, precision, progress, d, device):
    """Every task's examples as one stream through the MultiPromptModel: ({task: predictions}, speed record).

    Under torchrun each rank decodes its share of the stream's batches; the predictions are rank 0's alone.
    """
    stream = [(t, i) for t, ex in examples.items() for i in range(len(ex.sources))]
    sources = [examples[t].sources[i] for t, i in stream]
    tasks = [examples[t].task for t, _ in stream]
    limits = [examples[t].limits[i] for t, i in stream]
    # A short untimed warm-up, so one-time costs (kernels, caches) count against neither side of a comparison.
    warm = min(opts.batch_size, len(sources))
    predict_mixed(multi, tokenizer, sources[:warm], tasks[:warm], [1] * warm, opts, precision=precision, progress=False)
    gen_start = time.perf_counter()
    flags = dict(precision=precision, progress=progress, share=(d.rank, d.world))
    generate = functools.partial(predict_mixed, multi, tokenizer, sources, tasks, limits, opts, **flags)
    mixed = parallel.gather_predictions(generate, d, device)
    mixed_s = time.perf_counter() - gen_start
    per_task = {t: [mixed[k] for k, (s, _) in enumerate(stream) if s == t] for t in examples} if d.main else {}
    speed: dict[str, Any] = {
        "tasks": list(examples),
        "n": len(stream),
        "batch_size": opts.batch_size,
        "mixed_s": round(mixed_s, 3),
        "mixed_examples_per_s": _rate(len(stream), mixed_s),
        "separate_s": None,
        "separate_examples_per_s": None,
        "ratio": None,
        "separate_equal": None,
    }
    return per_task, speed


def _separate_runs(multi, prompts, tokenizer, examples, opts, per_task, speed, precision, progress, d, device):
    """Time the same examples as one `predict` per task over the same base (what --compare-speed adds)."""
    start = time.perf_counter()
    flags = dict(precision=precision, progress=progress, share=(d.rank, d.world))
    separate = {}
    for t, ex in examples.items():
        model = SoftPromptModel(multi.base, prompts[t].to(multi.prompts.device), base_id=multi.base_id)
        generate = functools.partial(predict, model, tokenizer, ex.sources, ex.task, ex.limits, opts, **flags)
        separate[t] = parallel.gather_predictions(generate, d, device)
    separate_s = time.perf_counter() - start
    return {
        "separate_s": round(separate_s, 3),
        "separate_examples_per_s": _rate(speed["n"], separate_s),
        "ratio": round(separate_s / speed["mixed_s"], 3) if speed["mixed_s"] > 0 else None,
        "separate_equal": sum(p == separate[t][i] for t in per_task for i, p in enumerate(per_task[t])),
    }


def summary_line(metrics: dict[str, Any]) -> str:
    """`tx | test | n=500 | BLEU 12.34 | chrF 40.00 | checkpoint epoch_010` (or `baseline hard`, `ensemble of 3`)."""
    s = metrics["scores"]
    parts = [f"{label} {s[key]:.2f}" for key, label in get_task(metrics["task"]).metrics]
    if metrics.get("ensemble"):
        origin = f"ensemble of {len(metrics['ensemble'])}"
    elif metrics["baseline"] is not None:
        origin = f"baseline {metrics['baseline']}"
    else:
        origin = f"checkpoint {Path(metrics['checkpoint']).name}"
    return " | ".join([metrics["task"], metrics["split"], f"n={metrics['n']}", *parts, origin])


def speed_line(results: dict[str, dict[str, Any]]) -> str:
    """One line on the mixed pass's speed, and with --compare-speed how separate runs compare, e.g.

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


def _by_task(configs: Sequence[Config] | dict[str, Config]) -> dict[str, Config]:
    """{task: config}, in the order given, with one config per task; an unknown task fails here."""
    items = list(configs.items()) if isinstance(configs, dict) else [(c.task.name, c) for c in configs]
    if not items:
        raise SoftPromptError("no configs given")
    out: dict[str, Config] = {}
    for name, cfg in items:
        if name != cfg.task.name:
            raise SoftPromptError(f"{cfg.source} is a config for task '{cfg.task.name}', given as '{name}'")
        if name in out:
            raise SoftPromptError(f"two configs for task '{name}': {out[name].source} and {cfg.source}")
        out[name] = cfg
    return out


def _check_one_base(cfgs: dict[str, Config]) -> None:
    """All tasks share one frozen model: the configs must agree on it, its storage, device and precision."""
    fields = {
        "model.name_or_path": lambda c: c.model.name_or_path,
        "model.revision": lambda c: c.model.revision,
        "model.fused_gelu": lambda c: c.model.fused_gelu,
        "model.dtype": lambda c: c.model.dtype.value,
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
