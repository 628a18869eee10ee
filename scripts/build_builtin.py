"""Rebuild a built-in model of the tiny-tasks family, pretrained on the synthetic tasks (docs/builtin-model.md).

    nohup nice python scripts/build_builtin.py --size 5m > models/tiny-tasks-5m.build.log 2>&1 &

Sizes (n_layer x n_embd): 300k (4 x 64), 1m (4 x 128, builtin:tiny-tasks itself), 5m (6 x 256); one recipe
otherwise. The state is saved every --save-every steps into --state-dir, and the same command after a kill goes
on from there; the result is the same, byte for byte, on the same kind of CPU with the recipe's thread count (2).
models/<name>/manifest.json records the recipe, seeds, SHA-256, accuracy per behaviour, time and this command.
"""

import argparse
import shlex
import sys
from pathlib import Path

from softprompt.builtin import FAMILY, SIZES
from softprompt.cli import run_cli
from softprompt.pretrain import Recipe, build


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="1m", help="which model of the family (default 1m)")
    parser.add_argument("--out", help="output folder (default: models/<name of the size>)")
    parser.add_argument("--steps", type=int, default=Recipe.steps, help=f"optimizer steps (default {Recipe.steps})")
    parser.add_argument("--state-dir", help="resume state folder (default: checkpoints/pretrain-<name>)")
    parser.add_argument("--save-every", type=int, default=500, help="steps between saved states (default 500)")
    args = parser.parse_args(argv)
    name = FAMILY[args.size]
    recipe = Recipe.for_size(args.size, steps=args.steps)
    command = "python scripts/build_builtin.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    out = args.out or f"models/{name}"
    state_dir = Path(args.state_dir or f"checkpoints/pretrain-{name}")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    manifest = build(out, recipe, command.strip(), log=log, state_dir=state_dir, save_every=args.save_every)
    print(f"saved {out}: sha256 {manifest['sha256']}, accuracy {manifest['accuracy_percent']}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
