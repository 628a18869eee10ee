"""Benchmark our prompt tuning against PEFT's, LoRA and full fine-tuning on GPT-2-small's shape.

    python scripts/bench.py --quick              # every row once: ~5 min on 2 idle CPU cores
    python scripts/bench.py --quick --repeats 3  # what results/bench.md holds (medians of 3)
    python scripts/bench.py                      # the full run: both shapes for every row, 3 repeats
    python scripts/bench.py --quick --tiny --steps 1 --out /tmp/bench   # a toy model, seconds (tests)
    python scripts/bench.py --quick --repeats 3 --rows ours/fp32,ours/bf16,ours-bf16base/bf16   # re-measure 3 rows

Results go to results/bench.md and results/bench.json (--out to change). With --rows, only those rows are
timed and measured, and filed into the existing bench.json (as "subset"; the other figures stay as they were).

Offline: the model is GPT2LMHeadModel(GPT2Config()) with seeded random weights.
Uses CUDA when present. Needs peft (pip install -e ".[dev]"); the harness is benchmarks/, outside the library.
"""

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ sits beside scripts/, not installed

from benchmarks.harness import run_bench  # noqa: E402
from benchmarks.plan import make_plan  # noqa: E402
from softprompt.cli import run_cli  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and rows at the throughput shape")
    parser.add_argument(
        "--tiny", action="store_true", help="a 2-layer toy model instead of GPT-2 small, for tests (overrides --quick)"
    )
    parser.add_argument("--steps", type=int, help="training steps per timed repeat (default 1)")
    parser.add_argument(
        "--repeats", type=int, help="timed repeats per row and of generation (default: 3 full, 1 quick)"
    )
    parser.add_argument("--rows", help="comma-separated rows to re-measure alone, e.g. ours/fp32,ours-bf16base/bf16")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    parser.add_argument("--out", default="results", help="folder for bench.md and bench.json (default results/)")
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    command = shlex.join(["python", "scripts/bench.py", *(sys.argv[1:] if argv is None else argv)])
    only = tuple(args.rows.split(",")) if args.rows else None
    run_bench(make_plan(mode, args.steps, args.repeats, only), args.out, args.device, command=command)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
