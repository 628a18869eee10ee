"""Train a soft prompt.

python scripts/train.py --config configs/smoke/sum.yaml            # offline, under a minute
python scripts/train.py --config configs/sum.yaml --set train.lr=0.3
python scripts/train.py --config configs/sum.yaml --resume          # continue after a crash

On SIGTERM or SIGUSR1 it checkpoints at the end of the current optimizer step and exits with status 75
(continue with --resume); errors exit with status 2.
"""

import argparse

from softprompt.cli import run_cli
from softprompt.config import load_config
from softprompt.preemption import EXIT_PREEMPTED, Preempted
from softprompt.train import train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/smoke/sum.yaml")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. train.lr=0.3 (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from the run's newest good checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="delete an earlier run of the same name first")
    parser.add_argument("--results-dir", default="results", help="where results/<run>/loss.png goes (default: results)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.set)
    try:
        train(cfg, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet, results_dir=args.results_dir)
    except Preempted:  # the checkpoint is written and the line printed
        return EXIT_PREEMPTED


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
