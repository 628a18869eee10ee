"""What an evaluation writes, and how it survives an interruption or a full disk.

    <results_dir>/<run>/<split>[-<variant>]/
        metrics.json                 scores, checkpoint and epoch, base model, n, decoding settings, timings, versions
        predictions.jsonl            one line per example: index, source, references, prediction
        predictions.partial.jsonl    while generating: a header line, then {"index", "prediction"} per finished row

The partial file's header names what the predictions came from (the prompt's
SHA-256 or the baseline and its prefix, the split, the limit and sample, the
decoding settings). A resumed run reads the rows back and generates only the
rest; it refuses, naming the field, a file whose header differs from its own.
Once every row is done, predictions.jsonl and metrics.json are written to
temporary files and renamed into place, and the partial file is removed: a
write that fails (a full disk) leaves the previous results as they were.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .config import Config
from .data import Examples
from .errors import SoftPromptError

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
PARTIAL_FILE = "predictions.partial.jsonl"
PARTIAL_FORMAT = 1
SAMPLE_SEED = 0
"""Seed of the random sample `--limit N` scores (recorded in metrics.json)."""


def results_path(results_dir: str | Path, cfg: Config, split: str, variant: str | None = None) -> Path:
    """<results_dir>/<run>/<split>[-<variant>]: variant is baseline-hard, baseline-none, ensemble or all."""
    return Path(results_dir) / cfg.run_name / (split if variant is None else f"{split}-{variant}")


def decoding(ex: Examples, batch_size: int, num_beams: int, prefix: str | None) -> dict[str, Any]:
    """The decoding settings metrics.json and the partial file's header record."""
    return {
        "strategy": "greedy" if num_beams == 1 else "beam",
        "num_beams": num_beams,
        "batch_size": batch_size,
        "max_new_tokens": max(ex.limits),
        "max_new_tokens_rule": ex.limit_rule,
        "stop_at_newline": ex.task.stop_at_newline,
        "prefix": prefix,
        "source_budget": ex.source_budget,
        "sources_cut": ex.sources_cut,
        "precision": ex.cfg.train.precision.value,
    }


def scored(ex: Examples, predictions: list[str], origin: dict[str, Any], decode: dict[str, Any]) -> dict[str, Any]:
    """The metrics record of one task's predictions, before timings: scores, where they came from, how decoded.

    origin: checkpoint, epoch and baseline (and any extra keys, e.g. an ensemble's members).
    """
    cfg = ex.cfg
    return {
        "task": ex.task.name,
        "split": ex.split,
        "n": len(predictions),
        "split_size": ex.split_size,
        "sample": {"seed": SAMPLE_SEED, "indices": ex.sample} if ex.sample is not None else None,
        "scores": ex.task.score(predictions, [ex.task.references(r) for r in ex.records]),
        "checkpoint": None,
        "epoch": None,
        "baseline": None,
        **origin,
        "config": cfg.source,
        "run_name": cfg.run_name,
        "base_model": cfg.model.name_or_path,
        "decoding": decode,
    }


def write_results(out_dir: Path, metrics: dict[str, Any], ex: Examples, tokenizer, predictions: list[str]) -> None:
    """metrics.json and predictions.jsonl, each complete in a temporary file before either replaces the old one."""
    rows = (
        {"index": i, "source": tokenizer.decode(src), "references": ex.task.references(rec), "prediction": pred}
        for i, (src, rec, pred) in enumerate(zip(ex.sources, ex.records, predictions, strict=True))
    )
    files = {
        out_dir / PREDICTIONS_FILE: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
        out_dir / METRICS_FILE: json.dumps(metrics, indent=2, ensure_ascii=False) + "\n",
    }
    temps: list[Path] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, text in files.items():
            temps.append(path.with_name(path.name + ".tmp"))
            _write_synced(temps[-1], text)
        for tmp, path in zip(temps, files, strict=True):
            os.replace(tmp, path)
    except OSError as err:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise SoftPromptError(
            f"cannot write results to {out_dir} ({err.strerror or err}); the results there before are unchanged"
        ) from err
    (out_dir / PARTIAL_FILE).unlink(missing_ok=True)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class PartialPredictions:
    """predictions.partial.jsonl of one evaluation: its header, the rows done, and appending the next batches."""

    def __init__(self, out_dir: Path, header: dict[str, Any], resume: bool):
        self.path = out_dir / PARTIAL_FILE
        self.header = json.loads(json.dumps({"format": PARTIAL_FORMAT, **header}))  # as it reads back
        self.done: dict[int, str] = {}
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            if self.path.is_file() and self.path.read_bytes().count(b"\n") > 1:  # a header and a row at least
                self._take_over(resume)
            else:  # nothing to lose: an interrupted run that finished no batch starts over
                _write_synced(self.path, json.dumps(self.header, ensure_ascii=False) + "\n")
        except OSError as err:
            raise SoftPromptError(f"cannot write {self.path} ({err.strerror or err})") from err

    def _take_over(self, resume: bool) -> None:
        """Read the rows an interrupted run left, if the header matches this run's; drop a torn last line."""
        lines = self.path.read_bytes().split(b"\n")
        complete, rows = lines[:-1], []  # the part after the last newline is a line cut off mid-write, or empty
        old = _json_line(complete[0]) if complete else None
        if not isinstance(old, dict) or old.get("format") != PARTIAL_FORMAT:
            raise SoftPromptError(f"{self.path} is not a partial predictions file; delete it to start over")
        if not resume:
            raise SoftPromptError(
                f"{self.path} holds {len(complete) - 1} predictions of an interrupted evaluation: "
                "add --resume to continue it, or delete the file to start over"
            )
        difference = first_difference(old, self.header)
        if difference:
            raise SoftPromptError(f"cannot resume from {self.path}: {difference}; delete it to start over")
        for raw in complete[1:]:
            row = _json_line(raw)
            if not isinstance(row, dict) or set(row) != {"index", "prediction"}:
                raise SoftPromptError(f"{self.path}: line {len(rows) + 2} is not a prediction; delete it to start over")
            rows.append(row)
        self.done = {r["index"]: r["prediction"] for r in rows}
        with open(self.path, "r+b") as f:  # keep the complete lines only, so appending starts on a fresh line
            f.truncate(sum(len(line) + 1 for line in complete))

    def append(self, indices: list[int], predictions: list[str]) -> None:
        """Add one finished batch's rows (those not already in the file) and sync them to disk."""
        text = "".join(
            json.dumps({"index": i, "prediction": p}, ensure_ascii=False) + "\n"
            for i, p in zip(indices, predictions, strict=True)
            if i not in self.done
        )
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            raise SoftPromptError(
                f"cannot write predictions to {self.path} ({err.strerror or err}); the {len(self.done)} written "
                "before are kept: --resume continues from them"
            ) from err
        self.done.update(zip(indices, predictions, strict=True))


def first_difference(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> str | None:
    """'decoding.batch_size is 8 in the file, 4 in this run' for the first key whose values differ."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key} is {json.dumps(a)} in the file, {json.dumps(b)} in this run"
    return None


def _json_line(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
