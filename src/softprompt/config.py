"""Run configuration: typed dataclasses loaded from YAML and `--set` overrides.

A config file has two top-level keys, `task` and (optionally) `run_name`, and
four sections, `model`, `data`, `train` and (optionally) `prompt`, each mapping onto a dataclass
below. Defaults live in these dataclasses and nowhere else. Loading checks
every key against the dataclass fields (unknown keys are rejected with a
suggestion), converts values to the field types, checks ranges and
combinations, and reports all problems at once, naming the file and key.

    cfg = load_config("configs/smoke/sum.yaml", overrides=["train.lr=0.3"])
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .tasks import TASKS, Task

SPLITS = ("train", "validation", "test")
"""The splits a dataset may have (data.files' keys, data.eval_split's values)."""


class PromptInit(str, enum.Enum):
    """How the prompt vectors start (a str Enum, so YAML strings compare directly)."""

    WORDS = "words"  # one vector per word of init_text: the mean of its sub-word embeddings
    TEXT = "text"  # PEFT's TEXT init: init_text's tokens, truncated or repeated to prompt_length
    VOCAB = "vocab"  # embeddings of seeded random vocabulary tokens
    RANDOM = "random"  # seeded normal noise with the embedding matrix's standard deviation


class Method(str, enum.Enum):
    """How the frozen model is prompted (docs/methods.md)."""

    PROMPT_TUNING = "prompt_tuning"  # P trained vectors in front of the input embeddings (Lester et al.)
    P_TUNING = "p_tuning"  # the same P vectors, produced in training by an MLP or LSTM encoder (Liu et al.)
    PREFIX_TUNING = "prefix_tuning"  # P trained keys and values at every layer (Li & Liang)


class Encoder(str, enum.Enum):
    """P-tuning's reparameterisation, as PEFT's PromptEncoder builds it."""

    MLP = "mlp"  # Linear-ReLU-Linear-ReLU-Linear
    LSTM = "lstm"  # 2-layer bidirectional LSTM, then Linear-ReLU-Linear


class Precision(str, enum.Enum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Strategy(str, enum.Enum):
    """How torchrun ranks hold the frozen base (training refuses fsdp in a single process; evaluation ignores it)."""

    DDP = "ddp"  # every rank holds the whole base; the prompt's gradient is averaged
    FSDP = "fsdp"  # the base is sharded over ranks (FSDP2 fully_shard per block, then the root)


class Schedule(str, enum.Enum):
    CONSTANT = "constant"
    LINEAR = "linear"  # linear warmup over warmup_steps, then linear decay to zero


class Tracker(str, enum.Enum):
    NONE = "none"
    TENSORBOARD = "tensorboard"  # scalars to results/<run>/tensorboard/ (pip install 'softprompt[tensorboard]')


class NonFinite(str, enum.Enum):
    STOP = "stop"  # stop the run, keeping the last good checkpoint
    SKIP = "skip"  # drop the batch (no optimizer step) and count it


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = "gpt2"
    """A Hub id, a local directory saved with save_pretrained, or `builtin:tiny-gpt2`."""
    prompt_length: int = 4
    """Number of trainable prompt vectors prepended to every input."""
    init: PromptInit = PromptInit.WORDS
    """words | text | vocab | random (see PromptInit)."""
    init_text: str | None = None
    """Text for the words/text inits; defaults to the task's init words."""
    keep_dropout: bool = False
    """Keep the frozen model's dropout active while training (off by default)."""
    fused_gelu: bool = True
    """Run GPT-2's gelu_new (tanh GELU as eight element-wise ops) as one fused op: same function, faster, far
    less activation memory; outputs differ from the unfused modules by float rounding only (false: as loaded)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of the model, for exact reproduction."""
    dtype: Precision = Precision.FP32
    """fp32 | bf16 | fp16: the dtype the frozen base is stored in (the prompt and optimizer state stay fp32).
    bf16 halves the base's memory; fp16 needs a GPU."""
    trust_remote_code: bool = False
    """Run Python code shipped with a Hub model. Only for models whose code you have read."""

    def problems(self) -> list[str]:
        out = []
        if self.prompt_length < 1:
            out.append(f"model.prompt_length must be at least 1, got {self.prompt_length}")
        if not self.name_or_path.strip():
            out.append("model.name_or_path must not be empty")
        if (
            self.init in (PromptInit.WORDS, PromptInit.TEXT)
            and self.init_text is not None
            and not self.init_text.split()
        ):
            out.append(f"model.init_text must hold at least one word for init '{self.init.value}'")
        if (
            self.init is PromptInit.WORDS
            and self.init_text is not None
            and self.init_text.split()
            and len(self.init_text.split()) != self.prompt_length
        ):
            n = len(self.init_text.split())
            out.append(
                f"model.init_text has {n} word(s) but model.prompt_length is {self.prompt_length}: "
                f"init 'words' makes one prompt vector per word, so give {self.prompt_length} words "
                "or change prompt_length (init 'text' repeats or truncates tokens instead)"
            )
        return out


@dataclass(frozen=True)
class PromptConfig:
    """The prompting method and its options; all defaults: prompt tuning, exactly as before the section existed."""

    method: Method = Method.PROMPT_TUNING
    """prompt_tuning | p_tuning | prefix_tuning (see Method and docs/methods.md)."""
    encoder: Encoder | None = None
    """p_tuning only: mlp | lstm (null: mlp)."""
    encoder_hidden_size: int | None = None
    """p_tuning, and prefix_tuning with prefix_projection: the encoder's hidden width (null: PEFT's default, the
    model's hidden size; for prefix_tuning on a grouped-query model, its key/value width)."""
    prefix_projection: bool = False
    """prefix_tuning only: train the prefixes through Li & Liang's MLP (embedding -> Linear-Tanh-Linear)."""

    def problems(self) -> list[str]:
        out = []
        m = self.method.value
        if self.method is Method.PROMPT_TUNING:
            given = [k for k in ("encoder", "encoder_hidden_size") if getattr(self, k) is not None]
            given += ["prefix_projection"] if self.prefix_projection else []
            owner = {"encoder": "p_tuning", "encoder_hidden_size": "p_tuning or prefix_tuning"}
            owner["prefix_projection"] = "prefix_tuning"
            out += [f"prompt.{k} is an option of {owner[k]}, not of prompt.method {m}" for k in given]
        if self.method is Method.P_TUNING and self.prefix_projection:
            out.append("prompt.prefix_projection is an option of prefix_tuning, not of prompt.method p_tuning")
        if self.method is Method.PREFIX_TUNING:
            if self.encoder is not None:
                out.append("prompt.encoder is an option of p_tuning, not of prompt.method prefix_tuning")
            if self.encoder_hidden_size is not None and not self.prefix_projection:
                out.append("prompt.encoder_hidden_size needs prompt.prefix_projection: true for prefix_tuning")
        if self.encoder_hidden_size is not None and self.encoder_hidden_size < 1:
            out.append(f"prompt.encoder_hidden_size must be at least 1, got {self.encoder_hidden_size}")
        return out

    def cross_problems(self, train: TrainConfig) -> list[str]:
        """What a method cannot do together with train settings."""
        out = []
        m = self.method.value
        if self.method is Method.PREFIX_TUNING and train.gradient_checkpointing:
            out.append(
                "train.gradient_checkpointing does not work with prompt.method prefix_tuning (a recomputed block "
                "would append its prefix to the cache twice); set it to false"
            )
        if self.method is not Method.PROMPT_TUNING and train.strategy is Strategy.FSDP:
            out.append(f"train.strategy fsdp is for prompt.method prompt_tuning only, not {m}; use ddp")
        return out


@dataclass(frozen=True)
class DataConfig:
    dataset: str | None = None
    """Hub dataset id; defaults to the task's dataset. Ignored when `files` is set."""
    dataset_config: str | None = None
    """Hub dataset configuration name (e.g. 3.0.0); defaults to the task's."""
    revision: str | None = None
    """Hub revision of the dataset."""
    files: dict[str, str] | None = None
    """Local JSON Lines files per split, in the Hub schema, relative to the config file."""
    max_train_examples: int | None = None
    """Use the first N training examples (None: all)."""
    max_eval_examples: int | None = None
    """Bound the validation loss during training to the first N validation examples (None: all). evaluate.py
    scores the whole split; its --limit N scores a seeded sample instead."""
    eval_split: str | None = None
    """The split evaluate.py scores by default (None: the task's: validation for qna, else test)."""
    max_source_tokens: int | None = None
    """Source token budget; None: the context window minus the prompt and max_target_tokens."""
    max_target_tokens: int = 128
    """Longest target in tokens, EOS included; longer targets are cut (counted in the log)."""
    carve_validation: int = 2000
    """Examples carved from train for validation when the dataset has no such split (Europarl)."""
    carve_test: int = 2000
    """Examples carved from train for test when the dataset has no such split."""
    carve_seed: int = 1234
    """Seed of the carve, fixed separately from train.seed so splits never move."""
    group_by_length: bool = False
    """Training batches of similar lengths (order still seeded); evaluation always sorts by length."""

    def problems(self) -> list[str]:
        out = []
        for name in ("max_train_examples", "max_eval_examples", "max_source_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                out.append(f"data.{name} must be at least 1 (or null for no limit), got {value}")
        if self.max_target_tokens < 2:
            out.append(f"data.max_target_tokens must be at least 2 (one token and EOS), got {self.max_target_tokens}")
        for name in ("carve_validation", "carve_test"):
            if getattr(self, name) < 1:
                out.append(f"data.{name} must be at least 1, got {getattr(self, name)}")
        if self.eval_split is not None and self.eval_split not in SPLITS:
            out.append(f"data.eval_split must be {_or(SPLITS)}, got '{self.eval_split}'")
        if self.files is not None:
            if not self.files:
                out.append("data.files must name at least a train file")
            for split in self.files:
                if split not in SPLITS:
                    out.append(f"data.files has split '{split}'; splits are {_and(SPLITS)}")
        return out


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 5e-5
    """AdamW learning rate (the reference setup's; prompt-tuning papers use 1e-3 to 0.3)."""
    weight_decay: float = 0.0
    """AdamW weight decay; 0 because decay only pulls the prompt towards zero."""
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    batch_size: int = 2
    """Examples per micro-batch."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step."""
    max_grad_norm: float | None = 1.0
    """Clip the prompt's gradient norm to this (null: no clipping)."""
    epochs: int = 10
    save_every: int = 3
    """Checkpoint every N epochs, and always after the last."""
    save_every_steps: int | None = None
    """Also checkpoint every N optimizer steps inside an epoch (null: never); only the newest such is kept."""
    log_every: int = 500
    """Print a step line every N micro-batches within an epoch."""
    eval_batch_size: int = 8
    seed: int = 42
    schedule: Schedule = Schedule.CONSTANT
    warmup_steps: int = 0
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda or cuda:N."""
    precision: Precision = Precision.FP32
    """fp32 | bf16 | fp16: autocast dtype of the frozen model; the prompt stays fp32."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more time."""
    on_nonfinite: NonFinite = NonFinite.STOP
    """What a NaN/inf loss does: stop the run, or skip the batch."""
    strategy: Strategy = Strategy.DDP
    """Under torchrun: ddp (each rank holds the whole base) or fsdp (the base sharded over ranks, for models
    that do not fit on one device). fsdp needs torchrun with at least 2 processes."""
    dist_timeout_minutes: float = 60.0
    """Under torchrun: how long a rank waits in a collective, e.g. while rank 0 downloads and tokenises on a first
    run (PyTorch's default, 10 minutes, is too short for a 1 GB dataset)."""
    output_dir: str = "checkpoints"
    """Where run directories go (relative paths: to the working directory unless set in a config)."""
    tracker: Tracker = Tracker.NONE
    """none | tensorboard: also write training's scalars to results/<run>/tensorboard/ (needs the extra)."""

    def problems(self) -> list[str]:
        out = []
        if not self.dist_timeout_minutes > 0:
            out.append(f"train.dist_timeout_minutes must be positive, got {self.dist_timeout_minutes}")
        for name in ("lr", "eps", "weight_decay", "warmup_steps"):
            if not math.isfinite(getattr(self, name)):
                out.append(f"train.{name} must be a finite number, got {getattr(self, name)}")
        if not self.lr > 0:
            out.append(f"train.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            out.append(f"train.weight_decay must not be negative, got {self.weight_decay}")
        if not all(0 <= b < 1 for b in self.betas):
            out.append(f"train.betas must both lie in [0, 1), got {list(self.betas)}")
        if not self.eps > 0:
            out.append(f"train.eps must be positive, got {self.eps}")
        for name in ("batch_size", "grad_accum_steps", "epochs", "save_every", "log_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                out.append(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.save_every_steps is not None and self.save_every_steps < 1:
            out.append(f"train.save_every_steps must be at least 1 (or null), got {self.save_every_steps}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            out.append(f"train.max_grad_norm must be positive (or null for no clipping), got {self.max_grad_norm}")
        if self.warmup_steps < 0:
            out.append(f"train.warmup_steps must not be negative, got {self.warmup_steps}")
        if self.warmup_steps and self.schedule is Schedule.CONSTANT:
            out.append("train.warmup_steps is set but train.schedule is 'constant'; use schedule 'linear'")
        if self.device not in ("auto", "cpu", "cuda") and not (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        ):
            out.append(f"train.device must be auto, cpu, cuda or cuda:N, got '{self.device}'")
        if self.precision is Precision.FP16 and self.device == "cpu":
            out.append("train.precision fp16 needs a GPU; on CPU use bf16 or fp32")
        return out

    def cross_problems(self, model: ModelConfig) -> list[str]:
        """Problems of model and train settings together."""
        if model.dtype is Precision.FP16 and self.device == "cpu":
            return ["model.dtype fp16 needs a GPU (CPU kernels for fp16 are slow or missing); on CPU use bf16 or fp32"]
        return []


@dataclass(frozen=True)
class Config:
    task: Task
    """The task (a name in tasks.TASKS in the YAML), resolved once at load: `cfg.task.name`, `cfg.task.metric`."""
    run_name: str = ""
    """Checkpoints go to <train.output_dir>/<run_name>/; default: the config's path below configs/."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    source: str = ""
    """The file this config was loaded from (set by the loader)."""

    @property
    def run_dir(self) -> Path:
        return Path(self.train.output_dir) / self.run_name

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as the YAML holds it (the task by its name)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out = _plain({**fields, "task": self.task.name} | {k: dataclasses.asdict(fields[k]) for k in _SECTIONS})
        if self.prompt == PromptConfig():  # a prompt-tuning run's config.yaml and checkpoints read as before
            del out["prompt"]
        return out


# ---------------------------------------------------------------- loading

_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "prompt": PromptConfig}
_TOP_KEYS = {"task", "run_name", *_SECTIONS}


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Load a YAML config, apply `section.key=value` overrides, validate it all."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid UTF-8 text (byte {err.start})") from err
    try:
        raw = yaml.safe_load(text)
    except RecursionError as err:  # PyYAML recurses once per nesting level
        raise ConfigError(f"{path}: YAML nested too deeply to read") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = (getattr(err, "problem", None) or str(err)).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values, got {type(raw).__name__}")
    raw = _apply_overrides(raw, overrides or [], path)
    return config_from_dict(raw, source=path)


def _known_task(value: Any) -> bool:
    return isinstance(value, str) and value in TASKS  # a YAML list or mapping is no task name (and unhashable)


def config_from_dict(raw: dict[str, Any], source: str | os.PathLike = "<dict>") -> Config:
    """Build and validate a Config from plain data, reporting every problem at once."""
    source = Path(source)
    problems = _unknown_keys(raw, _TOP_KEYS, "") + _task_problems(raw)
    task = TASKS[raw["task"]] if _known_task(raw.get("task")) else None
    sections, section_problems = _sections(raw, source, task)
    problems += section_problems
    if "model" in sections and "train" in sections:
        problems += sections["train"].cross_problems(sections["model"])
    if "prompt" in sections and "train" in sections:
        problems += sections["prompt"].cross_problems(sections["train"])
    if task is not None and "data" in sections:
        problems += _data_source_problems(task, sections["data"])
    run_name = raw.get("run_name")
    if run_name is not None and (
        not isinstance(run_name, str) or not run_name or "/" in run_name or run_name in (".", "..")
    ):
        problems.append(f"run_name must be a non-empty name without '/', got {run_name!r}")
    if len(problems) == 1:
        raise ConfigError(f"{source}: {problems[0]}")
    if problems:  # all of them at once, so one edit fixes the file
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{source}: {len(problems)} problems in the config:\n{listing}")
    return Config(task=task, run_name=run_name or default_run_name(source), source=str(source), **sections)


def _task_problems(raw: dict[str, Any]) -> list[str]:
    if "task" not in raw:
        return [f"task is required (one of {', '.join(TASKS)})"]
    if not _known_task(raw["task"]):
        got = str(raw["task"])
        return [f"task must be one of {', '.join(TASKS)}, got '{raw['task']}'{_suggest(got, list(TASKS))}"]
    return []


def _sections(raw: dict[str, Any], source: Path, task: Task | None) -> tuple[dict[str, Any], list[str]]:
    """The model, data and train sections built from `raw`, and the problems found in them."""
    sections: dict[str, Any] = {}
    problems: list[str] = []
    for name, cls in _SECTIONS.items():
        value = raw.get(name) or {}
        if not isinstance(value, dict):
            problems.append(f"{name} must be a mapping of keys to values, got {type(value).__name__}")
            continue
        kwargs, section_problems = _convert_fields(cls, value, name)
        problems += section_problems
        if name == "model" and kwargs.get("init_text") is None and task is not None:
            kwargs["init_text"] = task.init_words
        if name == "data" and kwargs.get("files"):
            kwargs["files"] = {k: str(_relative_to(source, v)) for k, v in kwargs["files"].items()}
        if name == "train" and "output_dir" in kwargs:
            kwargs["output_dir"] = str(_relative_to(source, kwargs["output_dir"]))
        # Fields that failed to convert are left out (defaulted) so range checks still report the rest.
        section = cls(**kwargs)
        problems += section.problems()
        sections[name] = section
    return sections, problems


def _data_source_problems(task: Task, data: DataConfig) -> list[str]:
    """A task with no Hub dataset (a local-only task) needs data.files (or data.dataset)."""
    if task.dataset is None and data.dataset is None and data.files is None:
        return [
            f"data.files is required: task '{task.name}' has no Hub dataset; set data.files to local JSON Lines "
            "files per split (e.g. {train: train.jsonl, validation: validation.jsonl}), or data.dataset to a Hub id"
        ]
    return []


def default_run_name(path: Path) -> str:
    """`configs/smoke/sum.yaml` -> `smoke-sum`; a file outside configs/ -> its stem."""
    parts = list(path.with_suffix("").parts)
    if "configs" in parts:
        parts = parts[len(parts) - parts[::-1].index("configs") :]
    else:
        parts = parts[-1:]
    return "-".join(parts) or "run"


def _relative_to(config_path: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() or str(config_path) == "<dict>" else config_path.parent / p


def _apply_overrides(raw: dict[str, Any], overrides: list[str], path: Path) -> dict[str, Any]:
    """Apply `section.key=value` strings; values are parsed as YAML scalars, then typed."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set train.lr=0.3")
        key, text = item.split("=", 1)
        keys = key.strip().split(".")
        if len(keys) == 1 and keys[0] in ("task", "run_name"):
            raw[keys[0]] = text
            continue
        if len(keys) == 3 and keys[:2] == ["data", "files"]:
            raw["data"] = _set_file(raw.get("data"), keys[2], text, item)
            continue
        if len(keys) != 2 or keys[0] not in _SECTIONS:
            raise ConfigError(
                f"--set {item!r}: unknown key '{key}'; keys are task, run_name, section.field "
                f"with section one of {', '.join(_SECTIONS)}, or data.files.SPLIT"
            )
        section, name = keys
        names = [f.name for f in dataclasses.fields(_SECTIONS[section])]
        if name not in names:
            raise ConfigError(f"--set {item!r}: {section} has no key '{name}'{_suggest(name, names)}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        if _field_type(_SECTIONS[section], name) is str and value is not None:
            value = text  # keep strings verbatim ("--set model.init_text=1 2 3 4")
        if not isinstance(raw.get(section), dict):
            raw[section] = {}
        raw[section][name] = value
    return raw


def _set_file(data: Any, split: str, text: str, item: str) -> dict[str, Any]:
    """The data section with data.files[split] set from `--set data.files.SPLIT=PATH`.

    A path given on the command line reads from the working directory, as any command-line path does, so it is
    made absolute here (a config file's own data.files read from the config's folder).
    """
    if split not in SPLITS:
        raise ConfigError(f"--set {item!r}: data.files has no split '{split}'; splits are {_and(SPLITS)}")
    if not text.strip():
        raise ConfigError(f"--set {item!r}: give a file path, e.g. --set data.files.{split}=my_{split}.jsonl")
    data = dict(data) if isinstance(data, dict) else {}
    files = dict(data["files"]) if isinstance(data.get("files"), dict) else {}
    files[split] = str(Path(os.path.expanduser(text)).resolve())
    data["files"] = files
    return data


def _or(words) -> str:
    return ", ".join(words[:-1]) + f" or {words[-1]}"


def _and(words) -> str:
    return ", ".join(words[:-1]) + f" and {words[-1]}"


def _unknown_keys(given: dict[str, Any], known, prefix: str) -> list[str]:
    return [f"unknown key '{prefix}{k}'{_suggest(str(k), known)}" for k in given if k not in known]


def _suggest(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _field_type(cls, name: str):
    hints = typing.get_type_hints(cls)
    tp = hints[name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if _is_union(tp) and len(args) == 1:
        return args[0]
    return tp


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _convert_fields(cls, values: dict[str, Any], section: str) -> tuple[dict[str, Any], list[str]]:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    problems = _unknown_keys(values, names, f"{section}.")
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in hints:
            continue
        try:
            out[name] = _convert(value, hints[name])
        except (TypeError, ValueError) as err:
            problems.append(f"{section}.{name}: {err}")
    return out, problems


def _convert(value: Any, tp) -> Any:
    """Convert a YAML value to a field type, or raise with a sentence saying why not."""
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0])
    if value is None:
        raise TypeError("must be set (null is not allowed here)")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        choices = [m.value for m in tp]
        if isinstance(value, str) and value in choices:
            return tp(value)
        raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}{_suggest(str(value), choices)}")
    if tp in (bool, int, float, str):
        return _convert_scalar(value, tp)
    return _convert_container(value, tp)


def _convert_scalar(value: Any, tp) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(f"must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(f"must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 5e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise TypeError(f"must be a number, got {value!r}")
    if isinstance(value, str):
        return value
    raise TypeError(f"must be a string, got {value!r}")


def _convert_container(value: Any, tp) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise TypeError(f"must be a list of {len(args)} values, got {value!r}")
        return tuple(_convert(v, a) for v, a in zip(value, args, strict=False))
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise TypeError(f"must be a mapping, got {value!r}")
        return {_convert(k, key_tp): _convert(v, value_tp) for k, v in value.items()}
    raise TypeError(f"unsupported field type {tp}")  # a programming error, not a user one


def _plain(obj: Any) -> Any:
    """Enums to their values, tuples to lists: what JSON and YAML can hold."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def configs_by_task(directory: str | os.PathLike) -> dict[str, Path]:
    """{task: config file} of the YAML files directly in `directory`, found by their `task:` key, in the
    registry's task order (what `scripts/evaluate.py --task NAME` and `--task all` read; file names do not count).

    A file without a readable `task:` key is not a task's config and is passed over; two files for one task
    are an error naming both.
    """
    found: dict[str, Path] = {}
    for path in sorted(Path(directory).glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
            continue
        task = raw.get("task") if isinstance(raw, dict) else None
        if not isinstance(task, str):
            continue
        if task in found:
            raise ConfigError(f"{found[task]} and {path} are both configs for task '{task}'; keep one in {directory}")
        found[task] = path
    order = list(TASKS)
    return dict(sorted(found.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))
