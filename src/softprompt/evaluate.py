"""Score trained soft prompts, or a baseline without one, on a task's evaluation split; or all tasks in one pass.

    metrics = evaluate(load_config("configs/smoke/qna.yaml"))                  # latest checkpoint
    metrics = evaluate(cfg, Prompting(checkpoint="checkpoints/smoke-qna/epoch_001"))   # a checkpoint of your choice
    metrics = evaluate(cfg, Prompting.baseline("hard"))    # the init words as plain text instead of the prompt
    metrics = evaluate(cfg, Prompting.baseline("text", "reply with the place"))   # any text, e.g. an oracle
    metrics = evaluate(cfg, Prompting.ensemble(["checkpoints/qna-s1", "checkpoints/qna-s2"]))   # prompt ensemble
    metrics = evaluate(cfg, decode=DecodeOptions(batch_size=4, max_new_tokens=16), limit=200)
    metrics = evaluate(cfg, resume=True)         # continue an interrupted evaluation from its partial file
    print(summary_line(metrics))   # qna | validation | n=10 | EM 0.00 | F1 3.21 | checkpoint epoch_010

    results = evaluate_all([load_config(f"configs/smoke/{t}.yaml") for t in ("qna", "sum", "tx")])
    print(speed_line(results))     # speed | 3 tasks, n=600, batch 16 | one mixed pass 77.67 ex/s

This module decides what is scored and with which prompt; generation.py
decodes (batched, greedy by default, each row to its own token limit and its
task's stop rule) and results.py writes (metrics.json, predictions.jsonl, and
predictions.partial.jsonl while generating, which `resume=True` continues).
Scores come from the task's own metric (Task.score).

How the prompt is applied is one value, `Prompting`: its `kind` is tuned (a
checkpoint's soft prompt, by default the run's latest), one of the baselines
none, hard and text (the frozen model without a trained prompt; hard and text
put words and a newline where the prompt would sit), or ensemble.

One pipeline scores one task or many (`_evaluate`), reading top to bottom:
load (rank 0 first), open the partial file, generate, then score and write.
For one task the model that decodes is the SoftPromptModel, the bare base
(a baseline) or a PromptEnsemble. Many tasks in one pass (`evaluate_all`,
`evaluate.py --task all`) use one frozen base model (every config must name
the same one), each task's latest checkpoint as a named prompt of a
MultiPromptModel, and one stream of all the tasks' examples sorted by source
length, so a batch mixes tasks and each row gets its own task's prompt, token
limit and stop rule: its prediction is the one a single-task run gives. A row
joins a batch only where it has room for the batch's longest limit in the
context window. How that pass compares in speed with separate runs is a
benchmark: `python scripts/bench_eval.py` (benchmarks/eval_speed.py).

Prompt ensembling (`Prompting.ensemble([...])`, `--ensemble A B C`): the listed
checkpoints of one task (or run folders: their latest checkpoint) are decoded
together (multi.PromptEnsemble), their next-token log-probabilities averaged at
every greedy step. Greedy only.

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
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed, parallel
from .checkpoint import STATE_META, resolve_checkpoint, resolve_prompt_dir, sha256
from .config import Config, Tracker
from .data import Examples, load_task_data
from .devices import device_name, pick_device
from .errors import SoftPromptError
from .generation import DecodeOptions, Unprompted, mixed_batches, predict, predict_mixed
from .hub import context_window
from .methods import build_for_prompt
from .model import PROMPT_FILE, SoftPromptModel, read_prompt
from .multi import MultiPromptModel, PromptEnsemble, load_prompts
from .provenance import versions
from .results import SAMPLE_SEED, PartialPredictions, decoding, results_path, scored, write_results
from .tasks import get_task
from .tracking import add_scalars

__all__ = [
    "BASELINES",
    "SAMPLE_SEED",
    "DecodeOptions",
    "PromptKind",
    "Prompting",
    "baseline_prefix",
    "check_one_base",
    "evaluate",
    "evaluate_all",
    "load_examples",
    "mixed_batches",
    "predict",
    "resolve_checkpoint",
    "sample_indices",
    "speed_line",
    "summary_line",
    "token_limits",
]


class PromptKind(str, Enum):
    """How the prompt is applied (a str Enum: "hard" == PromptKind.HARD)."""

    TUNED = "tuned"
    """A checkpoint's trained soft prompt in front of the sources."""
    NONE = "none"
    """Baseline: the frozen model reads the sources alone."""
    HARD = "hard"
    """Baseline: the config's init words as text, and a newline, where the prompt would sit."""
    TEXT = "text"
    """Baseline: a text you give (e.g. the oracle instruction), and a newline."""
    ENSEMBLE = "ensemble"
    """Several checkpoints' prompts of one task, their log-probabilities averaged at each greedy step."""


BASELINES = (PromptKind.HARD.value, PromptKind.NONE.value, PromptKind.TEXT.value)
"""The kinds without a trained prompt, as `--baseline` names them."""


@dataclasses.dataclass(frozen=True)
class Prompting:
    """What sits in front of the sources; checked when made (a SoftPromptError names what does not fit)."""

    kind: PromptKind = PromptKind.TUNED
    checkpoint: str | Path | None = None
    """tuned: the checkpoint (or prompt or PEFT adapter) folder; None: the run's latest checkpoint."""
    text: str | None = None
    """text: the words put in front of every source."""
    members: tuple[str | Path, ...] = ()
    """ensemble: the checkpoints, or run folders (their latest checkpoint)."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", PromptKind(self.kind))
        except ValueError:
            kinds = ", ".join(k.value for k in PromptKind)
            raise SoftPromptError(f"the prompt's kind must be one of {kinds}, got '{self.kind}'") from None
        object.__setattr__(self, "members", tuple(self.members))
        problems = []
        given = self.text is not None
        if (self.kind is PromptKind.TEXT) != given or (given and not self.text.strip()):
            problems.append("baseline 'text' needs a non-empty text, and only it takes one")
        if self.checkpoint is not None and self.kind is not PromptKind.TUNED:
            problems.append(f"a checkpoint goes with the tuned prompt, not with '{self.kind.value}'")
        if (self.kind is PromptKind.ENSEMBLE) != bool(self.members):
            problems.append("an ensemble needs one checkpoint or more, and only an ensemble takes them")
        if problems:
            raise SoftPromptError("; ".join(problems))

    @classmethod
    def baseline(cls, kind: str | PromptKind, text: str | None = None) -> Prompting:
        """A baseline: none, hard, or text with its text."""
        if PromptKind(kind) not in (PromptKind.NONE, PromptKind.HARD, PromptKind.TEXT):
            raise SoftPromptError(f"baseline must be one of {', '.join(BASELINES)}, got '{PromptKind(kind).value}'")
        return cls(PromptKind(kind), text=text)

    @classmethod
    def ensemble(cls, members: Sequence[str | Path]) -> Prompting:
        return cls(PromptKind.ENSEMBLE, members=tuple(members))

    @property
    def is_baseline(self) -> bool:
        return self.kind in (PromptKind.NONE, PromptKind.HARD, PromptKind.TEXT)

    @property
    def variant(self) -> str | None:
        """The results folder's suffix: <split>-baseline-hard, <split>-ensemble; None for the tuned prompt."""
        if self.is_baseline:
            return f"baseline-{self.kind.value}"
        return "ensemble" if self.kind is PromptKind.ENSEMBLE else None


def evaluate(
    cfg: Config,
    prompting: Prompting = Prompting(),
    *,
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
    one = {cfg.task.name: cfg}, {cfg.task.name: prompting}
    plan = _Plan.make(*one, mixed=False, split=split, limit=limit, decode=decode, results_dir=results_dir)
    return _evaluate(dataclasses.replace(plan, resume=resume, progress=progress))[cfg.task.name]


def evaluate_all(
    configs: Sequence[Config] | dict[str, Config],
    checkpoints: dict[str, str | Path] | None = None,
    *,
    split: str | None = None,
    limit: int | None = None,
    decode: DecodeOptions | None = None,
    results_dir: str | Path = "results",
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Score several tasks' prompts in one pass over one frozen model; {task: metrics} (see the module docstring).

    Defaults: each task's latest checkpoint and evaluation split; the smallest train.eval_batch_size of the
    configs. `split`, `limit` and `decode` apply to every task.
    """
    cfgs = _by_task(configs)
    check_one_base(cfgs)
    checkpoints = checkpoints or {}
    if set(checkpoints) - set(cfgs):
        raise SoftPromptError(
            f"checkpoints given for {', '.join(sorted(set(checkpoints) - set(cfgs)))}, "
            f"which no config is for (tasks: {', '.join(cfgs)})"
        )
    prompting = {t: Prompting(checkpoint=checkpoints.get(t)) for t in cfgs}
    plan = _Plan.make(cfgs, prompting, mixed=True, split=split, limit=limit, decode=decode, results_dir=results_dir)
    return _evaluate(dataclasses.replace(plan, progress=progress))


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What one pass scores: each task's config and prompting, and the settings every task shares."""

    cfgs: dict[str, Config]
    prompting: dict[str, Prompting]
    mixed: bool
    """Several tasks' prompts in one MultiPromptModel, their examples in one stream (evaluate_all)."""
    split: str | None
    limit: int | None
    opts: DecodeOptions
    """The decoding options with the batch size filled in."""
    results_dir: Path
    resume: bool = False
    progress: bool = True

    @classmethod
    def make(
        cls,
        cfgs: dict[str, Config],
        prompting: dict[str, Prompting],
        *,
        mixed: bool,
        split: str | None,
        limit: int | None,
        decode: DecodeOptions | None,
        results_dir: str | Path,
    ) -> _Plan:
        """Checked before anything loads; the batch size defaults to the smallest train.eval_batch_size."""
        decode = decode or DecodeOptions()
        if limit is not None and limit < 1:
            raise SoftPromptError(f"limit must be at least 1, got {limit}")
        ensemble = any(p.kind is PromptKind.ENSEMBLE for p in prompting.values())
        if ensemble and decode.num_beams > 1:
            raise SoftPromptError(f"an ensemble decodes greedily, not with num_beams {decode.num_beams}")
        batch = decode.batch_size or min(c.train.eval_batch_size for c in cfgs.values())
        opts = dataclasses.replace(decode, batch_size=batch)
        return cls(cfgs, prompting, mixed, split, limit, opts, Path(results_dir))

    @property
    def first(self) -> Config:
        """The config the shared settings come from (the base model, device, precision, seed)."""
        return next(iter(self.cfgs.values()))

    def split_of(self, cfg: Config) -> str:
        return self.split or cfg.data.eval_split or cfg.task.eval_split

    def variant(self, task: str) -> str | None:
        return "all" if self.mixed else self.prompting[task].variant


@dataclasses.dataclass
class _Chosen:
    """One task's prompting with its checkpoint (or ensemble members) found and their metadata read."""

    prompting: Prompting
    ckpt: Path | None
    members: list[Path]
    metas: list[dict[str, Any]]

    def origin(self) -> dict[str, Any]:
        epoch = self.metas[0].get("epoch") if self.ckpt is not None else None
        baseline = self.prompting.kind.value if self.prompting.is_baseline else None
        return {"checkpoint": str(self.ckpt) if self.ckpt else None, "epoch": epoch, "baseline": baseline}

    def identity(self) -> dict[str, Any]:
        """What the predictions depend on besides the data and decoding: the prompts' SHA-256, or the baseline."""
        return {
            "checkpoint_sha256": _prompt_hash(self.ckpt) if self.ckpt is not None else None,
            "ensemble_sha256": [_prompt_hash(p) for p in self.members],
            "baseline": self.origin()["baseline"],
        }


@dataclasses.dataclass
class _Loaded:
    """What the load step gives: the model that decodes, and each task's examples with room for its prefix."""

    chosen: dict[str, _Chosen]
    model: nn.Module
    """SoftPromptModel, Unprompted (a baseline), PromptEnsemble, or MultiPromptModel (several tasks)."""
    tokenizer: Any
    prefix: list[int]
    """A baseline's text tokens, put in front of every source (empty otherwise)."""
    examples: dict[str, Examples]
    opts: DecodeOptions

    @property
    def stream(self) -> list[tuple[str, int]]:
        """(task, example index) of every row the pass decodes, task after task."""
        return [(t, i) for t, ex in self.examples.items() for i in range(len(ex.sources))]

    def settings(self, task: str) -> dict[str, Any]:
        """The decoding settings metrics.json and the partial file record."""
        prefix = self.tokenizer.decode(self.prefix) if self.prefix else None
        opts = self.opts
        return decoding(self.examples[task], opts.batch_size, opts.num_beams, prefix)


class _Collected:
    """The predictions of a pass without a partial file (several tasks): {row: prediction}, as rank 0 gets them."""

    def __init__(self) -> None:
        self.done: dict[int, str] = {}

    def append(self, indices: list[int], predictions: list[str]) -> None:
        self.done.update(zip(indices, predictions, strict=True))


def _evaluate(plan: _Plan) -> dict[str, dict[str, Any]]:
    """The pipeline: load, open the partial file, generate, score and write; {task: metrics} on every rank."""
    started = time.perf_counter()
    d, device = _ranks(plan.first)
    # Rank 0 first: it builds the caches the others read. An error on any rank stops every rank.
    loaded = parallel.on_every_rank(functools.partial(_load, plan, device), d, device)
    out_dirs = {t: results_path(plan.results_dir, x.cfg, x.split, plan.variant(t)) for t, x in loaded.examples.items()}
    partial = parallel.on_main(functools.partial(_open_partial, plan, loaded, out_dirs), d, device)  # rank 0's file
    skip = set(distributed.broadcast_json(sorted(partial.done) if d.main else None, d, device))

    gen_start = time.perf_counter()
    generate = _generator(plan, loaded, skip, d)
    parallel.generate_together(generate, partial.append if d.main else None, d, device)  # all rows on rank 0
    gen_time = time.perf_counter() - gen_start  # on rank 0: until every rank's last batch has arrived

    timed = functools.partial(_timings, device, d, gen_time, len(loaded.stream) - len(skip), started)
    finish = functools.partial(_finish, plan, loaded, out_dirs, partial.done if d.main else {}, skip, timed)
    return distributed.broadcast_json(parallel.on_main(finish, d, device), d, device)


def _ranks(cfg: Config) -> tuple[distributed.Dist, torch.device]:
    """This process's rank and device (under torchrun its own GPU, or the CPU), in the process group."""
    d, name = distributed.init(cfg.train.device, cfg.train.dist_timeout_minutes)
    return d, pick_device(name, cfg.model.dtype)


def _load(plan: _Plan, device: torch.device) -> _Loaded:
    """Checkpoints checked (before the model loads), the model with the prompts applied, every task's examples."""
    chosen = {t: _choose(plan.cfgs[t], p) for t, p in plan.prompting.items()}
    tuned = [c.metas[0] for c in chosen.values() if c.ckpt is not None]
    # The prompt file's method decides the model (a prefix_tuning file needs per-layer keys/values).
    model, tokenizer = build_for_prompt(plan.first.model, tuned[0] if tuned else {}, seed=plan.first.train.seed)
    model.to(device)
    decoder, prefix, room = _apply_prompts(plan, chosen, model, tokenizer)
    window = context_window(model.base)
    examples = {
        t: load_examples(cfg, tokenizer, window, room[t], plan.split_of(cfg), plan.limit, plan.opts)
        for t, cfg in plan.cfgs.items()
    }
    return _Loaded(chosen, decoder, tokenizer, prefix, examples, plan.opts)


def _choose(cfg: Config, prompting: Prompting) -> _Chosen:
    """The checkpoint (or ensemble members) to score and their metadata; a baseline needs none."""
    ckpt = resolve_checkpoint(cfg, prompting.checkpoint) if prompting.kind is PromptKind.TUNED else None
    members = [resolve_prompt_dir(p) for p in prompting.members]
    metas = [prompt_meta(p, cfg) for p in ([ckpt] if ckpt is not None else members)]
    return _Chosen(prompting, ckpt, members, metas)


def _apply_prompts(
    plan: _Plan, chosen: dict[str, _Chosen], model: SoftPromptModel, tokenizer
) -> tuple[nn.Module, list[int], dict[str, int]]:
    """(the model that decodes, a baseline's prefix tokens, each task's prefix length: the room its sources leave)."""
    base, base_id = model.base, plan.first.model.name_or_path
    if plan.mixed:
        paths = [c.ckpt for c in chosen.values()]
        prompts = dict(zip(chosen, load_prompts(base, paths, base_id=base_id), strict=True))
        return MultiPromptModel(base, prompts, base_id=base_id), [], {t: p.shape[0] for t, p in prompts.items()}
    ((task, one),) = chosen.items()
    kind = one.prompting.kind
    if kind is PromptKind.TUNED:
        model.load_prompt(one.ckpt)
        return model, [], {task: model.prompt_length}
    if kind is PromptKind.ENSEMBLE:
        ensemble = PromptEnsemble(base, load_prompts(base, one.members, base_id=base_id))
        return ensemble, [], {task: ensemble.prompt_length}  # the stack is as long as its longest prompt
    prefix = baseline_prefix(plan.cfgs[task], tokenizer, kind, one.prompting.text)
    return Unprompted(base), prefix, {task: len(prefix)}


def _open_partial(plan: _Plan, loaded: _Loaded, out_dirs: dict[str, Path]) -> PartialPredictions | _Collected:
    """One task: its predictions.partial.jsonl (resumed, or refused without resume); several: no file."""
    if plan.mixed:
        return _Collected()
    ((task, ex),) = loaded.examples.items()
    header = _header(ex, loaded.chosen[task], loaded.settings(task), plan.limit)
    return PartialPredictions(out_dirs[task], header, plan.resume)


def _generator(plan: _Plan, loaded: _Loaded, skip: set[int], d: distributed.Dist) -> Callable[..., Any]:
    """generate(on_batch=...) over this rank's share of the pass's rows (see parallel.generate_together)."""
    common = dict(precision=plan.first.train.precision, progress=plan.progress and d.main, share=(d.rank, d.world))
    if plan.mixed:
        rows = [(loaded.examples[t], i) for t, i in loaded.stream]
        sources = [ex.sources[i] for ex, i in rows]
        tasks = [ex.task for ex, _ in rows]
        limits = [ex.limits[i] for ex, i in rows]
        return functools.partial(
            predict_mixed, loaded.model, loaded.tokenizer, sources, tasks, limits, plan.opts, **common
        )
    (ex,) = loaded.examples.values()
    sources = [loaded.prefix + s for s in ex.sources]
    return functools.partial(
        predict, loaded.model, loaded.tokenizer, sources, ex.task, ex.limits, plan.opts, skip=skip, **common
    )


def _finish(plan: _Plan, loaded: _Loaded, out_dirs, done: dict[int, str], skip: set[int], timed) -> dict[str, Any]:
    """On rank 0: each task's metrics (scores, origin, decoding, timings), written beside its predictions."""
    stream, out = loaded.stream, {}
    for task, ex in loaded.examples.items():
        predictions = [done[k] for k, (t, _) in enumerate(stream) if t == task]
        chosen = loaded.chosen[task]
        metrics = scored(ex, predictions, chosen.origin(), loaded.settings(task))
        metrics.update(timed(), results_dir=str(out_dirs[task]))
        if plan.mixed:
            metrics["speed"] = _speed(loaded, plan.opts, metrics["generation_s"])
        if skip:
            metrics["resumed"] = len(skip)  # rows read back from the partial file; the timings are of the rest
        if chosen.prompting.kind is PromptKind.ENSEMBLE:
            metrics["ensemble"] = _members_record(chosen, loaded.model)
        write_results(out_dirs[task], metrics, ex, loaded.tokenizer, predictions)
        if not plan.mixed:  # one pass over several tasks has never logged to the runs' trackers
            _track(ex.cfg, plan.results_dir, out_dirs[task].name, metrics, chosen)
        out[task] = metrics
    return out


def _speed(loaded: _Loaded, opts: DecodeOptions, seconds: float) -> dict[str, Any]:
    """The mixed pass's speed record (metrics.json's `speed`); the separate_* fields are filled by no evaluation
    any more (benchmarks/eval_speed.py times separate runs) and stay null, so the file keeps its shape."""
    n = len(loaded.stream)
    return {
        "tasks": list(loaded.examples),
        "n": n,
        "batch_size": opts.batch_size,
        "mixed_s": seconds,
        "mixed_examples_per_s": _rate(n, seconds),
        "separate_s": None,
        "separate_examples_per_s": None,
        "ratio": None,
        "separate_equal": None,
    }


def _members_record(chosen: _Chosen, ensemble: PromptEnsemble) -> list[dict[str, Any]]:
    """What metrics.json records of an ensemble: each member's checkpoint, epoch and prompt length."""
    return [
        {"checkpoint": str(p), "epoch": m.get("epoch"), "prompt_length": int(t.shape[0])}
        for p, m, t in zip(chosen.members, chosen.metas, ensemble.prompts, strict=True)
    ]


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


def sample_indices(size: int, n: int, seed: int = SAMPLE_SEED) -> list[int]:
    """n of range(size), drawn with a fixed seed and kept in order (a split's first N can all share one topic)."""
    return sorted(random.Random(seed).sample(range(size), n))


def load_examples(cfg: Config, tokenizer, window: int, prefix_len: int, split: str, limit: int | None, decode):
    """The split's examples (a seeded sample of `limit`), their sources cut to leave room for the prefix."""
    task = cfg.task
    data_cfg, window = room_for_prefix(cfg, window, prefix_len)
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


def room_for_prefix(cfg: Config, window: int, prefix_len: int) -> tuple[Config, int]:
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


def prompt_meta(ckpt: Path, cfg: Config) -> dict[str, Any]:
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


def _track(cfg: Config, results_dir: Path, variant: str, metrics: dict[str, Any], how: _Chosen) -> None:
    """With train.tracker: tensorboard, the scores join the training run's scalars as eval/<split>/<metric>,
    at the checkpoint's optimizer step (0 for a baseline), so TensorBoard shows them beside the loss curves."""
    if cfg.train.tracker is Tracker.NONE:
        return
    state = how.ckpt / STATE_META if how.ckpt is not None else None  # a PEFT adapter folder has none
    step = json.loads(state.read_text(encoding="utf-8")).get("global_step", 0) if state and state.is_file() else 0
    numbers = {k: v for k, v in metrics["scores"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    add_scalars(results_dir / cfg.run_name, {f"eval/{variant}/{k}": float(v) for k, v in numbers.items()}, step)


def _header(ex: Examples, how: _Chosen, settings: dict[str, Any], limit: int | None) -> dict[str, Any]:
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
    """One line on the speed of the pass over several tasks, e.g.

        speed | 3 tasks, n=30, batch 8 | one mixed pass 9.10 ex/s

    (benchmarks/eval_speed.py compares it with separate single-task runs).
    """
    s = next(iter(results.values()))["speed"]
    parts = [
        "speed",
        f"{len(s['tasks'])} tasks, n={s['n']}, batch {s['batch_size']}",
        f"one mixed pass {s['mixed_examples_per_s']:.2f} ex/s",
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


def check_one_base(cfgs: dict[str, Config]) -> None:
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
