"""A small grid over the reference's choices, trained and scored on the built-in model's synthetic tasks.

    python scripts/ablate.py                       # qna; results/ablation/table.md and table.png

Three questions, each a few short runs of one smoke config (everything else as in the config):
  - init: which start is best for 4 prompt vectors (words, text, vocab, random)?
  - length: 1, 4 or 16 vectors?
  - learning rate: does the reference's 5e-5, for the reference's 10 epochs, learn anything, against 3e-2 and 0.3?
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import load_config
from .evaluate import Prompting, evaluate
from .train import train


@dataclass(frozen=True)
class Variant:
    question: str
    name: str
    overrides: tuple[str, ...]


def grid() -> list[Variant]:
    """The runs; the config's own settings are the baseline row of each question."""
    return [
        Variant("init", "words (config)", ()),
        Variant("init", "text", ("model.init=text",)),
        Variant("init", "vocab", ("model.init=vocab",)),
        Variant("init", "random", ("model.init=random",)),
        Variant("length", "1 vector", ("model.prompt_length=1", "model.init=text")),
        Variant("length", "16 vectors", ("model.prompt_length=16", "model.init=text")),
        Variant("learning rate", "5e-5, 10 epochs (reference)", ("train.lr=5e-5", "train.epochs=10")),
        Variant("learning rate", "3e-2", ("train.lr=0.03",)),
        Variant("learning rate", "0.3", ("train.lr=0.3",)),
    ]


def run_grid(config: str | Path, out_dir: str | Path, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train and score every variant into out_dir; returns one row per variant (also written as table.md/png)."""
    out_dir = Path(out_dir).resolve()  # a relative train.output_dir would be read relative to the config file
    base = load_config(config)
    key, label = base.task.headline
    rows = []
    for v in grid():
        slug = "".join(c if c.isalnum() else "-" for c in f"{v.question}-{v.name}").strip("-")
        sets = [
            *v.overrides,
            f"run_name=ablation-{base.task.name}-{slug}",
            f"train.output_dir={out_dir / 'checkpoints'}",
        ]
        cfg = load_config(config, sets)
        started = time.perf_counter()
        train(cfg, overwrite=True, quiet=True, echo=lambda line: None, results_dir=None)
        train_s = time.perf_counter() - started
        metrics = evaluate(cfg, results_dir=out_dir / "results", progress=False)
        rows.append(
            {
                "question": v.question,
                "variant": v.name,
                "overrides": list(v.overrides),
                "score": metrics["scores"][key],
                "metric": label,
                "n": metrics["n"],
                "train_s": round(train_s, 1),
            }
        )
        log(f"{v.question:14s} {v.name:30s} {label} {metrics['scores'][key]:6.2f}  ({train_s:.0f} s training)")
    baseline = evaluate(base, Prompting.baseline("none"), results_dir=out_dir / "results", progress=False)
    rows.append(
        {
            "question": "no prompt",
            "variant": "--baseline none",
            "overrides": [],
            "score": baseline["scores"][key],
            "metric": label,
            "n": baseline["n"],
            "train_s": 0.0,
        }
    )
    write_table(rows, out_dir, config, base.task.name)
    return rows


def write_table(rows: list[dict[str, Any]], out_dir: Path, config: str | Path, task: str) -> None:
    from matplotlib.figure import Figure

    metric = rows[0]["metric"]
    lines = [
        f"# Ablation on {task} ({config}, test split, n={rows[0]['n']})",
        "",
        f"| question | variant | {metric} | training s |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {r['question']} | {r['variant']} | {r['score']:.2f} | {r['train_s']:.0f} |" for r in rows]
    (out_dir / "table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([f"{r['question']}: {r['variant']}" for r in rows][::-1], [r["score"] for r in rows][::-1])
    ax.set_xlabel(f"{metric} on the test split")
    ax.set_title(f"softprompt ablation: {task}")
    fig.savefig(out_dir / "table.png", dpi=110)
