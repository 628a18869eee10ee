"""Write the synthetic task splits that the smoke configs train and score on.

    python scripts/make_synthetic_data.py                  # data/synthetic/{qna,sum,tx}/{train,validation,test}.jsonl

The output is deterministic (fixed seeds in softprompt.synthetic): rerunning it reproduces the shipped files.
"""

import argparse

from softprompt.cli import run_cli
from softprompt.synthetic import write_splits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/synthetic", help="output folder (default: data/synthetic)")
    args = parser.parse_args(argv)
    for path in write_splits(args.out):
        print(path)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
