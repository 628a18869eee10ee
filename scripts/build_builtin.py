"""Rebuild builtin:tiny-tasks, the small GPT-2 pretrained on the synthetic tasks (31-46 minutes on 2 cores).

    nohup python scripts/build_builtin.py --out models/tiny-tasks > build.log 2>&1 &

The weights are reproduced byte for byte on the same kind of CPU with the recipe's thread count (2);
models/tiny-tasks/manifest.json records the recipe, seeds, SHA-256, accuracy per behaviour and this command.
"""

import argparse
import shlex
import sys

from softprompt.cli import run_cli
from softprompt.pretrain import Recipe, build


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="models/tiny-tasks", help="output folder (default: models/tiny-tasks)")
    parser.add_argument("--steps", type=int, default=Recipe.steps, help=f"optimizer steps (default {Recipe.steps})")
    args = parser.parse_args(argv)
    recipe = Recipe(steps=args.steps)
    command = "python scripts/build_builtin.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    manifest = build(args.out, recipe, command.strip(), log=lambda msg: print(msg, flush=True))
    print(f"saved {args.out}: sha256 {manifest['sha256']}, accuracy {manifest['accuracy_percent']}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
