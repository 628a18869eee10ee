"""Show what a trained prompt drifted towards: per vector its norm, its cosine
distance from its initial word, and the nearest vocabulary tokens.

    python scripts/inspect_prompt.py checkpoints/sum/epoch_009
    python scripts/inspect_prompt.py checkpoints/smoke-sum --top-k 10     # a run folder: its latest checkpoint
"""

import argparse

from softprompt.cli import run_cli
from softprompt.inspection import format_report, inspect_prompt


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint folder (checkpoints/<run>/epoch_NNN) or run folder")
    parser.add_argument("--top-k", type=int, default=5, help="nearest tokens to list per vector (default 5)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    print(format_report(inspect_prompt(args.checkpoint, k=args.top_k)))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
