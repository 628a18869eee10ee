"""One report across runs: every evaluation in a table, tuned prompts against baselines, loss curves overlaid.

    python scripts/report.py                        # every run under results/ and checkpoints/
    python scripts/report.py smoke-qna smoke-sum    # only these runs (names, or their folders)

It reads only what training and evaluation already write:

    results/<run>/<split>[-<variant>]/metrics.json   variant: none (the tuned prompt), baseline-<kind>,
                                                     ensemble, all (one pass over every task)
    checkpoints/<run>/log.jsonl                      step and epoch records

and writes results/report.md (one table per task: a row per run, split and variant with the task's
headline metrics, the checkpoint, n, the base model and the date the metrics were written) and
results/report.png (a bar chart per task of the tuned prompt against its baselines, on the task's
headline metric, above the runs' epoch losses overlaid). A run with missing or unreadable results is
listed under "Notes" in the report (and on stderr) instead of stopping it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import SoftPromptError, first_line
from .plots import read_log
from .tasks import TASKS


def metric_labels(task: str) -> dict[str, str]:
    """{score key: label} of the metrics a task's summary line prints (Task.metrics); {} for a task not registered."""
    return dict(TASKS[task].metrics) if task in TASKS else {}


METRICS_FILE = "metrics.json"
REPORT_MD = "report.md"
REPORT_PNG = "report.png"
# Where evaluation writes a variant: <split>-baseline-<kind>/, <split>-ensemble/, <split>-all/ (see evaluate.py).
VARIANT_FOLDER = re.compile(r"(?P<split>.+?)-(?P<variant>baseline-.+|ensemble|all)")


@dataclass
class Row:
    """One evaluation: a run's split, scored by one variant (tuned, baseline-<kind>, ensemble or all)."""

    run: str
    split: str
    variant: str
    task: str
    scores: dict[str, float]
    checkpoint: str
    n: int | None
    base_model: str
    date: str


@dataclass
class Curve:
    """A run's epoch losses from its log.jsonl."""

    run: str
    epochs: list[int]
    train: list[float]
    val: list[float]


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find_runs(names: list[str] | None, results_dir: Path, checkpoints_dir: Path) -> list[str]:
    """The run names to report: those given (a name or a run's folder), or every folder under either root."""
    if names:
        return list(dict.fromkeys(Path(n).name for n in names))
    found = set()
    for root in (results_dir, checkpoints_dir):
        if root.is_dir():
            found |= {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if not found:
        raise SoftPromptError(
            f"no runs to report: neither {results_dir} nor {checkpoints_dir} holds a run folder; train and evaluate "
            "one first, e.g. python scripts/train.py --config configs/smoke/qna.yaml && "
            "python scripts/evaluate.py --config configs/smoke/qna.yaml"
        )
    return sorted(found)


def collect(
    names: list[str] | None, results_dir: str | Path = "results", checkpoints_dir: str | Path = "checkpoints"
) -> Report:
    """Every evaluation and loss curve of the runs, with a note for each thing missing or unreadable."""
    results_dir, checkpoints_dir = Path(results_dir), Path(checkpoints_dir)
    report = Report()
    for run in find_runs(names, results_dir, checkpoints_dir):
        run_results, run_ckpts = results_dir / run, checkpoints_dir / run
        if not run_results.is_dir() and not run_ckpts.is_dir():
            report.notes.append(f"{run}: no {run_results} or {run_ckpts}; is the name right?")
            continue
        rows = _read_results(run, run_results, report.notes)
        if not rows and run_ckpts.is_dir():
            report.notes.append(f"{run}: trained but not evaluated (no {run_results}/<split>/{METRICS_FILE})")
        report.rows += rows
        curve = _read_curve(run, run_ckpts, report.notes)
        if curve is not None:
            report.curves.append(curve)
    if not report.rows and not report.curves:
        raise SoftPromptError(
            f"nothing to report: no readable {METRICS_FILE} under {results_dir} and no loss records under "
            f"{checkpoints_dir} for {', '.join(find_runs(names, results_dir, checkpoints_dir))}"
        )
    report.rows.sort(key=lambda r: (r.task, r.run, r.split, _variant_order(r.variant)))
    return report


def _variant_order(variant: str) -> tuple[int, str]:
    return ({"tuned": 0, "ensemble": 2, "all": 3}.get(variant, 1), variant)


def split_and_variant(folder: str) -> tuple[str, str]:
    """`validation` -> (validation, tuned); `test-baseline-hard` -> (test, baseline-hard); `test-all` -> (test, all)."""
    match = VARIANT_FOLDER.fullmatch(folder)
    return (match["split"], match["variant"]) if match else (folder, "tuned")


def _read_results(run: str, run_results: Path, notes: list[str]) -> list[Row]:
    if not run_results.is_dir():
        return []
    rows = []
    for folder in sorted(p for p in run_results.iterdir() if p.is_dir()):
        path = folder / METRICS_FILE
        if not path.is_file():
            notes.append(f"{run}: {folder} has no {METRICS_FILE} (an evaluation that did not finish?)")
            continue
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            notes.append(f"{run}: {path} is not readable JSON ({first_line(err)})")
            continue
        if not isinstance(metrics, dict) or not isinstance(metrics.get("scores"), dict):
            notes.append(f"{run}: {path} holds no 'scores'")
            continue
        rows.append(_row(run, folder.name, metrics, path))
    return rows


def _row(run: str, folder: str, metrics: dict[str, Any], path: Path) -> Row:
    split, variant = split_and_variant(folder)
    if metrics.get("ensemble"):
        checkpoint = f"{len(metrics['ensemble'])} prompts"
    elif metrics.get("checkpoint"):
        checkpoint = Path(str(metrics["checkpoint"])).name
    else:
        checkpoint = "—"  # a baseline scores no trained prompt
    written = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    return Row(
        run=run,
        split=str(metrics.get("split", split)),
        variant=variant,
        task=str(metrics.get("task", "?")),
        scores=headline_scores(str(metrics.get("task")), metrics["scores"]),
        checkpoint=checkpoint,
        n=metrics.get("n"),
        base_model=str(metrics.get("base_model", "?")),
        date=written.strftime("%Y-%m-%d %H:%M UTC"),
    )


def headline_scores(task: str, scores: dict[str, Any]) -> dict[str, float]:
    """The task's headline metrics, in order; for another task (or scores lacking them) every numeric score."""
    wanted = metric_labels(task)
    if wanted and all(key in scores for key in wanted):
        return {key: float(scores[key]) for key in wanted}
    return {k: float(v) for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _read_curve(run: str, run_ckpts: Path, notes: list[str]) -> Curve | None:
    if not run_ckpts.is_dir():
        notes.append(f"{run}: no {run_ckpts}, so no loss curve")
        return None
    try:
        _, epochs = read_log(run_ckpts)
    except SoftPromptError as err:
        notes.append(f"{run}: no loss curve: {err}")
        return None
    if not epochs:
        notes.append(f"{run}: no finished epoch in {run_ckpts}/log.jsonl yet, so no loss curve")
        return None
    return Curve(
        run,
        [int(r["epoch"]) for r in epochs],
        [float(r["train_loss"]) for r in epochs],
        [float(r["val_loss"]) for r in epochs],
    )


def chart_metric(task: str, rows: list[Row]) -> str:
    """The one metric the bar chart shows for a task: its Task.headline, or the first score the rows share."""
    if task in TASKS and all(TASKS[task].headline[0] in r.scores for r in rows):
        return TASKS[task].headline[0]
    shared = [k for k in rows[0].scores if all(k in r.scores for r in rows)]
    return shared[0] if shared else ""


def bar_groups(rows: list[Row]) -> dict[str, tuple[str, dict[str, dict[str, float]]]]:
    """{task: (metric, {"run / split": {variant: value}})} of the tuned prompts and their baselines."""
    out = {}
    for task in sorted({r.task for r in rows}):
        mine = [r for r in rows if r.task == task and (r.variant == "tuned" or r.variant.startswith("baseline-"))]
        metric = chart_metric(task, mine) if mine else ""
        if not metric:
            continue
        groups: dict[str, dict[str, float]] = {}
        for r in mine:
            groups.setdefault(f"{r.run} / {r.split}", {})[r.variant] = r.scores[metric]
        out[task] = (metric, groups)
    return out


def render_markdown(report: Report, command: str) -> str:
    lines = [
        "# Report across runs",
        "",
        f"Produced by `{command}`. Scores are 0–100; `—`: no trained prompt "
        "(a baseline). The date is when each metrics.json was written.",
        "",
    ]
    for task in sorted({r.task for r in report.rows}):
        rows = [r for r in report.rows if r.task == task]
        labels = {k: metric_labels(task).get(k, k) for k in rows[0].scores}
        columns = [k for k in labels if all(k in r.scores for r in rows)]
        header = " | ".join(["run", "split", "variant", *(labels[k] for k in columns), "checkpoint", "n", "base model"])
        lines += [
            f"## {task}",
            "",
            f"| {header} | date |",
            "|---|---|---|" + "---:|" * len(columns) + "---|---:|---|---|",
        ]
        for r in rows:
            scores = " | ".join(_num(r.scores[k]) for k in columns)
            lines.append(
                f"| {r.run} | {r.split} | {r.variant} | {scores} | {r.checkpoint} | "
                f"{r.n if r.n is not None else '?'} | {r.base_model} | {r.date} |"
            )
        lines.append("")
    if not report.rows:
        lines += ["No evaluation results yet.", ""]
    lines += [f"![tuned prompts against baselines, and the runs' loss curves]({REPORT_PNG})", ""]
    if report.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in report.notes), ""]
    return "\n".join(lines)


def _num(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.2f}"


def draw(report: Report, out_png: Path) -> None:
    """Bar charts (one per task) above one panel of every run's epoch losses (train solid, validation dashed)."""
    from matplotlib.figure import Figure

    bars = bar_groups(report.rows)
    fig = Figure(figsize=(max(8.0, 4.0 * len(bars)), 8), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1])
    axes = top.subplots(1, len(bars), squeeze=False)[0] if bars else []
    for ax, (task, (metric, groups)) in zip(axes, bars.items(), strict=True):
        variants = sorted({v for g in groups.values() for v in g}, key=_variant_order)
        width = 0.8 / len(variants)
        for i, variant in enumerate(variants):
            xs = [g + i * width for g, values in enumerate(groups.values()) if variant in values]
            ax.bar(xs, [values[variant] for values in groups.values() if variant in values], width, label=variant)
        ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], labels=list(groups), rotation=15)
        ax.set_title(f"{task}: {metric_labels(task).get(metric, metric)}")
        ax.legend(fontsize="small")
    if not bars:
        top.text(0.5, 0.5, "no evaluation results", ha="center")
    ax = bottom.subplots()
    for i, curve in enumerate(report.curves):
        color = f"C{i % 10}"
        ax.plot(curve.epochs, curve.train, "o-", color=color, label=f"{curve.run} train")
        ax.plot(curve.epochs, curve.val, "s--", color=color, label=f"{curve.run} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (mean target-token cross-entropy)")
    ax.grid(alpha=0.3)
    if report.curves:
        ax.legend(fontsize="small")
    try:
        out_png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_png, dpi=110)
    except OSError as err:
        raise SoftPromptError(f"cannot write {out_png} ({err.strerror})") from err


def write_report(
    names: list[str] | None,
    results_dir: str | Path = "results",
    checkpoints_dir: str | Path = "checkpoints",
    out_dir: str | Path | None = None,
    command: str = "python scripts/report.py",
) -> Report:
    """Collect the runs and write report.md and report.png into out_dir (default: results_dir)."""
    report = collect(names, results_dir, checkpoints_dir)
    out_dir = Path(results_dir if out_dir is None else out_dir)
    draw(report, out_dir / REPORT_PNG)
    try:
        (out_dir / REPORT_MD).write_text(render_markdown(report, command), encoding="utf-8")
    except OSError as err:
        raise SoftPromptError(f"cannot write {out_dir / REPORT_MD} ({err.strerror})") from err
    return report
