"""Draw a run's loss curves (train per logged step, train/val per epoch) from its log.jsonl.

python scripts/plot_losses.py checkpoints/smoke-sum                # -> results/smoke-sum/loss.png
python scripts/plot_losses.py checkpoints/sum --out /tmp/sum-loss.png
"""

import argparse
from pathlib import Path

from softprompt.cli import run_cli
from softprompt.plots import plot_losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="run folder holding log.jsonl, e.g. checkpoints/smoke-sum")
    parser.add_argument("--out", help="PNG to write (default: <results-dir>/<run>/loss.png)")
    parser.add_argument("--results-dir", default="results", help="default location of the PNG (default: results)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else Path(args.results_dir) / run_dir.resolve().name / "loss.png"
    print(plot_losses(run_dir, out))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
