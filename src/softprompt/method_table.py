"""Every prompting method on every task, trained and scored by one loop: the table of docs/methods.md.

    rows = compare(out_dir="results/methods")        # results/methods/table.md, table.png, rows.json

For each setting (SETTINGS: the smoke configs' own lr 0.1 with 4 vectors, and a harder one, 1 vector at the
reference's lr 5e-5), each task of builtin:tiny-tasks (configs/smoke/<task>.yaml) and each method (VARIANTS),
it trains with `train()` on a shortened run (SHORT), scores a seeded sample of the test split with
`evaluate()`, and measures in the same process, on one fixed training batch:

- step time: the median of STEPS forward/backward/AdamW steps, after one warm-up;
- training memory: bytes autograd saves for the backward pass (saved_tensors_hooks) plus the trainable
  parameters with their gradient and two AdamW moments (4 x 4 bytes each): what the method adds on top of the
  frozen model, which all methods share;
- trainable parameters, and the bytes of the prompt file evaluation reads (prompt.safetensors);
- evaluation examples per second (evaluate()'s own examples_per_s, generation only).

Step time and memory are reported as ratios to prompt_tuning's in the same setting and task.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import latest_checkpoint
from .config import Config, load_config
from .data import build_batch, load_task_data
from .evaluate import evaluate
from .hub import context_window
from .methods import build_for_training
from .prompt_file import PROMPT_FILE
from .train import train

TASKS = ("qna", "sum", "tx")
VARIANTS = {
    "prompt_tuning": (),
    "p_tuning (mlp)": ("prompt.method=p_tuning",),
    "p_tuning (lstm)": ("prompt.method=p_tuning", "prompt.encoder=lstm"),
    "prefix_tuning": ("prompt.method=prefix_tuning",),
    "prefix_tuning (projection)": ("prompt.method=prefix_tuning", "prompt.prefix_projection=true"),
}
SETTINGS = {
    "smoke (4 vectors, lr 0.1)": ("model.init=text",),
    "hard (1 vector, lr 5e-5)": ("model.init=text", "model.prompt_length=1", "train.lr=5e-5"),
}
SHORT = ("data.max_train_examples=640", "train.epochs=1", "train.save_every=1")
"""640 examples, one epoch (40 optimizer steps of 16): where the smoke runs' losses have flattened."""
LIMIT = 100
STEPS = 5


@dataclass(frozen=True)
class Cost:
    step_s: float
    memory_bytes: int
    trainable: int


def measure(cfg: Config, steps: int = STEPS, fastest: bool = False) -> Cost:
    """Step time and training memory of cfg's method on its first 16 training examples (see the docstring)."""
    torch.manual_seed(cfg.train.seed)
    model, tokenizer = build_for_training(cfg.model, cfg.prompt, seed=cfg.train.seed)
    data = load_task_data(cfg, tokenizer, context_window(model.base))
    batch = build_batch(data.splits["train"], list(range(cfg.train.batch_size)), tokenizer.pad_token_id)
    params = model.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.train.lr)
    model.train()
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    times = []
    for i in range(steps + 1):
        saved[0] = 0
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step warms up kernels and allocators
            times.append(time.perf_counter() - start)
    trainable = sum(p.numel() for p in params)
    return Cost(min(times) if fastest else statistics.median(times), saved[0] + 16 * trainable, trainable)


def run_one(config: str, sets: list[str], out: Path) -> dict[str, Any]:
    """Train, score and measure one (setting, task, method); the row without the ratios."""
    cfg = load_config(config, [*sets, f"train.output_dir={out / 'checkpoints'}"])
    train(cfg, overwrite=True, quiet=True, echo=lambda line: None, results_dir=None)
    metrics = evaluate(cfg, limit=LIMIT, results_dir=out / "results", progress=False)
    ckpt = latest_checkpoint(cfg.run_dir)
    cost = measure(cfg)
    key, label = cfg.task.headline
    return {
        "score": metrics["scores"][key],
        "metric": label,
        "n": metrics["n"],
        "trainable": cost.trainable,
        "file_bytes": (ckpt / PROMPT_FILE).stat().st_size,
        "step_s": cost.step_s,
        "memory_bytes": cost.memory_bytes,
        "eval_per_s": metrics["examples_per_s"],
    }


def compare(
    out_dir: str | Path = "results/methods",
    tasks=TASKS,
    settings=tuple(SETTINGS),
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Every row (written as it comes to rows.json, so a stopped run keeps what it measured), then the table."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for task in tasks:  # task outermost: a run stopped early still holds both settings of its first tasks
        for setting in settings:
            for name, method_sets in VARIANTS.items():
                slug = "".join(c if c.isalnum() else "-" for c in f"{setting}-{task}-{name}")
                sets = [*SETTINGS[setting], *SHORT, *method_sets, f"run_name=methods-{slug}"]
                row = {"setting": setting, "task": task, "method": name}
                row |= run_one(f"configs/smoke/{task}.yaml", sets, out)
                rows.append(row)
                (out / "rows.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
                log(f"{setting} | {task} | {name} | {row['metric']} {row['score']:.2f} | {row['step_s'] * 1e3:.0f} ms")
    write_table(rows, out)
    return rows


def remeasure(out_dir: str | Path, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Measure step time again for the rows in <out>/rows.json, each (setting, task) group back to back.

    The step times of `compare` are taken minutes apart, so on a shared machine a change of load between
    two rows shows up in their ratio; here the rows compared with each other are measured within seconds
    (the fastest of STEPS steps), which is what the table's ratios then use.
    """
    out = Path(out_dir)
    rows = json.loads((out / "rows.json").read_text(encoding="utf-8"))
    for r in rows:
        sets = [*SETTINGS[r["setting"]], *SHORT, *VARIANTS[r["method"]]]
        cost = measure(load_config(f"configs/smoke/{r['task']}.yaml", sets), fastest=True)
        r |= {"step_s": cost.step_s, "memory_bytes": cost.memory_bytes, "remeasured": True}
        log(f"{r['setting']} | {r['task']} | {r['method']} | {cost.step_s * 1e3:.0f} ms")
    (out / "rows.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    write_table(rows, out)
    return rows


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with step time and memory over prompt_tuning's of the same setting and task."""
    ref = {(r["setting"], r["task"]): r for r in rows if r["method"] == "prompt_tuning"}
    out = []
    for r in rows:
        base = ref.get((r["setting"], r["task"]))
        ratios = {f"{k}_ratio": r[f"{k}_{u}"] / base[f"{k}_{u}"] if base else float("nan") for k, u in _MEASURED}
        out.append({**r, **ratios})
    return out


_MEASURED = (("step", "s"), ("memory", "bytes"))


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| setting | task | method | test score | trainable params | prompt file bytes | step time (x PT) "
        "| training memory (x PT) | eval examples/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in with_ratios(rows):
        lines.append(
            f"| {r['setting']} | {r['task']} | {r['method']} | {r['metric']} {r['score']:.1f} | {r['trainable']:,} "
            f"| {r['file_bytes']:,} | {r['step_ratio']:.2f} | {r['memory_ratio']:.2f} | {r['eval_per_s']:.1f} |"
        )
    return lines


def write_table(rows: list[dict[str, Any]], out: Path) -> None:
    """table.md and table.png (scores per method, one panel per setting) into `out`."""
    from matplotlib.figure import Figure

    n = rows[0]["n"] if rows else 0
    head = [f"# Prompting methods on builtin:tiny-tasks (test split, n={n} per task; PT = prompt_tuning)", ""]
    (out / "table.md").write_text("\n".join(head + table_lines(rows)) + "\n", encoding="utf-8")
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    fig = Figure(figsize=(10, 3.5 * max(1, len(settings))), layout="constrained")
    for i, setting in enumerate(settings):
        ax = fig.add_subplot(len(settings), 1, i + 1)
        mine = [r for r in rows if r["setting"] == setting]
        ax.barh([f"{r['task']}: {r['method']}" for r in mine][::-1], [r["score"] for r in mine][::-1])
        ax.set_title(setting)
        ax.set_xlabel("headline test metric (EM, ROUGE-L, BLEU)")
    fig.savefig(out / "table.png", dpi=100)
