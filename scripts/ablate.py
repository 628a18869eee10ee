"""Train and score a small grid (prompt init, prompt length, learning rate) on a smoke task.

    python scripts/ablate.py                                    # qna: about 10 minutes on 2 CPU cores
    python scripts/ablate.py --config configs/smoke/tx.yaml --out results/ablation-tx

Writes <out>/table.md and <out>/table.png (and the runs' checkpoints and results under <out>/).
"""

import argparse

from softprompt.ablation import run_grid
from softprompt.cli import run_cli


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/smoke/qna.yaml", help="smoke config to vary")
    parser.add_argument("--out", default="results/ablation", help="output folder (default: results/ablation)")
    args = parser.parse_args(argv)
    run_grid(args.config, args.out)
    print(f"wrote {args.out}/table.md and {args.out}/table.png")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
