"""Train and score every prompting method on every task of builtin:tiny-tasks, in one loop (docs/methods.md).

    python scripts/methods.py                          # both settings, all tasks: results/methods/table.md, .png
    python scripts/methods.py --task qna --setting smoke
    nice python scripts/methods.py > results/methods/log.txt 2>&1 &

Writes <out>/table.md, <out>/table.png and <out>/rows.json (rows.json after every row, so a stopped run
keeps what it measured; `--table-only` rewrites the table from it, `--remeasure` times its rows again with
each task's methods back to back, so their ratios do not mix two loads of a shared machine).
"""

import argparse
import json
from pathlib import Path

from softprompt.cli import run_cli
from softprompt.method_table import SETTINGS, TASKS, compare, remeasure, write_table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/methods", help="output folder (default: results/methods)")
    parser.add_argument("--task", action="append", choices=TASKS, help="only this task (repeatable)")
    parser.add_argument("--setting", action="append", choices=[s.split()[0] for s in SETTINGS], help="smoke or hard")
    parser.add_argument("--table-only", action="store_true", help="write the table from <out>/rows.json")
    parser.add_argument("--remeasure", action="store_true", help="time <out>/rows.json's rows again, group by group")
    args = parser.parse_args(argv)
    if args.remeasure:
        remeasure(args.out)
    elif args.table_only:
        write_table(json.loads((Path(args.out) / "rows.json").read_text()), Path(args.out))
    else:
        settings = [s for s in SETTINGS if args.setting is None or s.split()[0] in args.setting]
        compare(args.out, tasks=args.task or TASKS, settings=settings)
    print(f"wrote {args.out}/table.md and {args.out}/table.png")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
