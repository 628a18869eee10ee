"""A trained prompt on your own input: records or plain texts in, predictions out.

    gen = Generator.load(load_config("configs/smoke/sum.yaml"))             # the run's latest checkpoint
    gen.predict([{"article": "..."}])                                        # -> ["..."]
    gen.predict(["an article as plain text"])                                # a text fills the task's body field
    gen.predict(records, sampling=Sampling(temperature=0.8, top_p=0.9, seed=1))
    Generator.load(cfg, baseline="hard")                                     # the same base, no trained prompt

An input is the task's own record (only the fields its source reads: qna's context and question, sum's article,
tx's translation.bg), or a plain text, which fills the field the task's template cuts to the budget (the body:
qna's context, sum's article, tx's translation.bg). A record may also give `text` for that field beside the
others, e.g. {"text": "...", "question": "..."} for qna.

Each input is formatted exactly as training and evaluation format it (data.encode_source, the same source
budget, the baselines' prefixes from evaluate.baseline_prefix, the same token limits), and greedy decoding is
generation.predict itself, so a record's prediction here is evaluation's prediction for it.

Sampling (temperature > 0) decodes each input alone, seeded with `seed` just before, so an input's sample does
not depend on the inputs around it (and the server's sample for the same input and seed is the same).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch

from .config import Config
from .data import encode_source, generation_batch, source_budget
from .devices import autocast, pick_device
from .errors import SoftPromptError, first_line
from .evaluate import BASELINES, baseline_prefix, prompt_meta, resolve_checkpoint, room_for_prefix, token_limits
from .generation import DecodeOptions, Unprompted, decode_tokens, predict
from .hub import context_window
from .methods import build_for_prompt
from .model import SoftPromptModel
from .tasks import Task, record_problem

TEXT_FIELD = "text"
"""The input field that stands for the task's body field (see the module docstring)."""
_PROBE = "\x00probe{}\x00"


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Decoding by sampling: temperature > 0 (0: greedy), nucleus top_p in (0, 1], the seed of each input."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            problems.append(f"temperature must be a finite number >= 0 (0: greedy), got {self.temperature}")
        if not (0 < self.top_p <= 1):
            problems.append(f"top_p must lie in (0, 1], got {self.top_p}")
        if problems:
            raise SoftPromptError("; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# ------------------------------------------------------------------ inputs


def _probe_record(fields: Sequence[str]) -> dict[str, Any]:
    """A record holding a distinct marker string in each dotted field (a list of one for `[]` fields)."""
    record: dict[str, Any] = {}
    for i, spec in enumerate(fields):
        parts = spec.removesuffix("[]").split(".")
        node = record
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = [_PROBE.format(i)] if spec.endswith("[]") else _PROBE.format(i)
    return record


@cache
def source_fields(task: Task) -> tuple[tuple[str, ...], str | None]:
    """(the required fields the task's source reads, the one that is its body, or None), found by probing
    task.pieces with marker strings: the fields whose removal breaks it are the source's."""
    fields = []
    for spec in task.required:
        rest = [f for f in task.required if f != spec]
        try:
            task.pieces(_probe_record(rest))
        except (KeyError, TypeError, IndexError):
            fields.append(spec)
    _, body, _ = task.pieces(_probe_record(task.required))
    body_field = next((f for i, f in enumerate(task.required) if _PROBE.format(i) == body.strip()), None)
    return tuple(fields), body_field if body_field in fields else None


def as_record(task: Task, item: Any) -> dict[str, Any]:
    """The task record for an input (a record, a plain text, or a record with `text`), or a clear error."""
    fields, body = source_fields(task)
    if isinstance(item, str) or (isinstance(item, dict) and TEXT_FIELD in item):
        if body is None:
            raise SoftPromptError(f"task '{task.name}' takes records with {_fields(fields)}, not a plain text")
        text = item if isinstance(item, str) else item[TEXT_FIELD]
        record = copy.deepcopy({k: v for k, v in item.items() if k != TEXT_FIELD}) if isinstance(item, dict) else {}
        node = record
        *parents, last = body.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node, dict) else node
        if isinstance(node, dict):
            node[last] = text
        item = record
    # Only the source's fields are checked: a stand-in target keeps record_problem's target check quiet.
    problem = record_problem(dataclasses.replace(task, required=fields, target=lambda r: "x"), item)
    if problem:
        text_hint = f" (or '{TEXT_FIELD}' for {body})" if body else ""
        raise SoftPromptError(f"{problem}; task '{task.name}' reads {_fields(fields)}{text_hint}")
    return item


def source_record(task: Task, record: dict[str, Any]) -> dict[str, Any]:
    """The part of a dataset record the task's source reads (its target and references left out)."""
    out: dict[str, Any] = {}
    for spec in source_fields(task)[0]:
        *parents, last = spec.removesuffix("[]").split(".")
        src, dst = record, out
        for part in parents:
            src, dst = src[part], dst.setdefault(part, {})
        dst[last] = src[last]
    return out


def _fields(fields: Sequence[str]) -> str:
    return ", ".join(f"'{f.removesuffix('[]')}'" for f in fields)


# ------------------------------------------------------------------ the generator


@dataclasses.dataclass
class Generator:
    """A loaded base with one task's prompt (or a baseline's text prefix), ready to predict."""

    cfg: Config
    model: SoftPromptModel
    tokenizer: Any
    checkpoint: Path | None
    """The prompt's checkpoint; None for a baseline."""
    prefix: list[int]
    """A baseline's prefix tokens, put before each source (empty with a trained prompt)."""
    budget: int
    """Source tokens an input keeps (longer bodies are cut, as in training and evaluation)."""

    @property
    def task(self) -> Task:
        return self.cfg.task

    @classmethod
    def load(
        cls,
        cfg: Config,
        checkpoint: str | Path | None = None,
        *,
        baseline: str | None = None,
        prompt_text: str | None = None,
    ) -> Generator:
        """The run's checkpoint (the latest unless given), or a baseline (none, hard, text with prompt_text)."""
        if baseline is not None and baseline not in BASELINES:
            raise SoftPromptError(f"baseline must be one of {', '.join(BASELINES)}, got '{baseline}'")
        if baseline is not None and checkpoint is not None:
            raise SoftPromptError("a checkpoint and a baseline exclude each other")
        if (baseline == "text") != bool((prompt_text or "").strip()):
            raise SoftPromptError("baseline 'text' needs a non-empty prompt text, and a prompt text needs it")
        ckpt = resolve_checkpoint(cfg, checkpoint) if baseline is None else None
        meta = prompt_meta(ckpt, cfg) if ckpt is not None else {}  # another task's checkpoint fails here
        # The prompt file's method decides the model (a prefix_tuning file needs per-layer keys/values).
        model, tokenizer = build_for_prompt(cfg.model, meta, seed=cfg.train.seed)
        model.to(pick_device(cfg.train.device, cfg.model.dtype))
        prefix = baseline_prefix(cfg, tokenizer, baseline, prompt_text)
        if ckpt is not None:
            model.load_prompt(ckpt)
        prefix_len = len(prefix) if baseline is not None else model.prompt_length
        data_cfg, window = room_for_prefix(cfg, context_window(model.base), prefix_len)
        return cls(cfg, model, tokenizer, ckpt, prefix, source_budget(data_cfg, window))

    def encode(self, item: Any) -> tuple[list[int], bool]:
        """(source token ids, whether the body was cut to the budget) for an input (see as_record)."""
        return encode_source(as_record(self.task, item), self.task, self.tokenizer, self.budget)

    def limit(self, max_new_tokens: int | None) -> int:
        """The token limit of one prediction: the task's, as evaluation's, or the one given (at most that)."""
        if max_new_tokens is not None and max_new_tokens < 1:
            raise SoftPromptError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        return token_limits(self.cfg, [[]], max_new_tokens)[0]

    @property
    def decoder(self) -> SoftPromptModel | Unprompted:
        """What decodes: the model with its trained prompt, or for a baseline the frozen base alone (the baseline's
        words are already in front of each source)."""
        return self.model if self.checkpoint is not None else Unprompted(self.model.base)

    def predict(
        self,
        items: Sequence[Any],
        *,
        max_new_tokens: int | None = None,
        sampling: Sampling | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> list[str]:
        """One prediction per input, in order (greedy unless `sampling` says otherwise)."""
        sources = [self.prefix + self.encode(item)[0] for item in items]
        return self.predict_sources(sources, max_new_tokens, sampling, batch_size, progress)

    def predict_sources(self, sources, max_new_tokens=None, sampling=None, batch_size=None, progress=False):
        """Predictions for encoded sources (the prefix already in front); see predict."""
        limit = self.limit(max_new_tokens)
        if not sources:
            return []
        if sampling is None or sampling.greedy:
            opts = DecodeOptions(batch_size=batch_size or self.cfg.train.eval_batch_size)
            flags = dict(precision=self.cfg.train.precision, progress=progress)
            return predict(self.decoder, self.tokenizer, sources, self.task, [limit] * len(sources), opts, **flags)
        return [self._sample(s, limit, sampling) for s in sources]

    def _sample(self, source: list[int], limit: int, sampling: Sampling) -> str:
        """One input decoded alone by sampling, the global RNG seeded first (HF's sampling draws from it)."""
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in generation_batch([source], pad).items()}
        kwargs = dict(max_new_tokens=limit, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        kwargs |= dict(top_k=0, eos_token_id=eos, pad_token_id=pad)
        torch.manual_seed(sampling.seed)
        with autocast(device, self.cfg.train.precision), torch.no_grad():
            new = self.decoder.generate(batch["input_ids"], batch["attention_mask"], **kwargs)
        return decode_tokens(new[0, :limit].tolist(), self.tokenizer, eos, self.task.stop_at_newline)


# ------------------------------------------------------------------ files


def read_inputs(path: str | Path) -> tuple[list[Any], list[str]]:
    """(inputs, where each is: "FILE, line N") of a JSON Lines file (a record or a JSON string per line)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SoftPromptError(f"cannot read input file {path} ({err.strerror})") from err
    items, where = [], []
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line.decode("utf-8")))
            where.append(f"{path}, line {lineno}")
        except UnicodeDecodeError as err:
            raise SoftPromptError(f"{path}, line {lineno}: not UTF-8 text (byte {err.start + 1})") from err
        except (json.JSONDecodeError, RecursionError) as err:
            raise SoftPromptError(f"{path}, line {lineno}: not valid JSON ({first_line(err)})") from err
    if not items:
        raise SoftPromptError(f"{path}: the file holds no inputs")
    return items, where


def check_inputs(task: Task, items: Sequence[Any], where: Sequence[str]) -> None:
    """Fail on the first input the task cannot read, naming where it is (before any model loads)."""
    for item, place in zip(items, where, strict=True):
        try:
            as_record(task, item)
        except SoftPromptError as err:
            raise SoftPromptError(f"{place}: {err}") from err


def encode_all(gen: Generator, items: Sequence[Any], where: Sequence[str]) -> tuple[list[list[int]], int]:
    """(sources with the prefix in front, how many were cut); a bad input fails naming where it is."""
    sources, cut = [], 0
    for item, place in zip(items, where, strict=True):
        try:
            ids, was_cut = gen.encode(item)
        except SoftPromptError as err:
            raise SoftPromptError(f"{place}: {err}") from err
        sources.append(gen.prefix + ids)
        cut += was_cut
    return sources, cut


def output_record(item: Any, prediction: str) -> dict[str, Any]:
    """What --output writes per input: the record with its prediction (a text input as {"text": ...})."""
    record = dict(item) if isinstance(item, dict) else {TEXT_FIELD: item}
    return {**record, "prediction": prediction}
