"""Print the memory table of docs/bigger-models.md: prompt tuning's weights and activations for gpt2 up to a 70B Llama.

    python scripts/memory_table.py                 # N = 8 ranks, batch 2 × 1,024 positions
    python scripts/memory_table.py --world 4 --length 2048

Nothing is downloaded or allocated (see softprompt.memory): about 15 s on a CPU.
"""

import argparse

from softprompt.cli import run_cli
from softprompt.memory import memory_table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=int, default=8, help="ranks the base is sharded over under FSDP (default 8)")
    parser.add_argument("--batch", type=int, default=2, help="rows per micro-batch (default 2)")
    parser.add_argument("--length", type=int, default=1024, help="positions per row, prompt included (default 1024)")
    args = parser.parse_args(argv)
    print(memory_table(args.world, args.batch, args.length))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
