"""Loss curves of a run, drawn from its log.jsonl into a PNG.

    plot_losses("checkpoints/smoke-sum", "results/smoke-sum/loss.png")

One chart, x = optimizer steps: the training loss at every logged step (the
mean over the last `log_every` micro-batches) as a thin line, and each
epoch's average train and validation loss as markers at the step the epoch
ended; the top axis labels those steps with their epoch numbers. Drawn on a
bare matplotlib Figure (the Agg canvas), so it needs no display and leaves
pyplot's global backend alone.
"""

from __future__ import annotations

from pathlib import Path

from .errors import SoftPromptError
from .runlog import read_log


def plot_losses(run_dir: str | Path, out_png: str | Path) -> Path:
    """Draw the run's loss curves into out_png (parent folders are created); returns its path."""
    from matplotlib.figure import Figure

    run_dir, out_png = Path(run_dir), Path(out_png)
    steps, epochs = read_log(run_dir)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    if steps:
        # The mean over the micro-batches since the previous line (stdout shows one micro-batch's loss, as
        # the reference does; logs written before window_loss existed hold only that mean, as "loss").
        ax.plot(
            [r["global_step"] for r in steps],
            [r.get("window_loss", r["loss"]) for r in steps],
            lw=0.8,
            alpha=0.6,
            color="tab:blue",
            label="train (mean between logged steps)",
        )
    if epochs:
        x = [r["global_step"] for r in epochs]
        ax.plot(x, [r["train_loss"] for r in epochs], "o-", color="tab:blue", label="train (epoch average)")
        ax.plot(x, [r["val_loss"] for r in epochs], "s-", color="tab:orange", label="validation (epoch average)")
        every = -(-len(epochs) // 15)  # at most ~15 epoch labels, the last one always shown
        marked = epochs[::-1][::every][::-1]
        top = ax.secondary_xaxis("top")
        top.set_xticks([r["global_step"] for r in marked], labels=[str(r["epoch"]) for r in marked])
        top.set_xlabel("epoch")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean target-token cross-entropy)")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    try:
        out_png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_png, dpi=120)
    except OSError as err:
        raise SoftPromptError(f"cannot write {out_png} ({err.strerror})") from err
    return out_png
