"""Benchmark evaluation: one mixed pass over several tasks (what `evaluate.py --task all` runs) against separate
single-task runs of the same examples, in one process; prints one line and can write the record as JSON.

    python scripts/bench_eval.py --config-dir configs/smoke --limit 10
    python scripts/bench_eval.py --config configs/smoke/qna.yaml --config configs/smoke/tx.yaml --out /tmp/speed.json
    # speed | 3 tasks, n=30, batch 8 | one mixed pass 9.10 ex/s | separate runs 7.40 ex/s | 1.23x | 30/30 ...equal

Each task's latest checkpoint is used (train them first). The harness is benchmarks/eval_speed.py.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ sits beside scripts/, not installed

from benchmarks.eval_speed import compare_speed, speed_line  # noqa: E402
from softprompt.cli import run_cli  # noqa: E402
from softprompt.config import configs_by_task, load_config  # noqa: E402
from softprompt.errors import SoftPromptError  # noqa: E402
from softprompt.generation import DecodeOptions  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", help="a task's YAML config (repeat); default: --config-dir's")
    p.add_argument("--config-dir", default="configs/smoke", help="every config there, by task: key (default smoke)")
    p.add_argument("--split", help="split to decode (default: each task's evaluation split)")
    p.add_argument("--limit", type=int, help="a seeded sample of N examples of each task (default: all)")
    p.add_argument("--batch-size", type=int, help="rows per generation batch (default: train.eval_batch_size)")
    p.add_argument("--max-new-tokens", type=int, help="token limit per prediction (default: the task's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--out", help="also write the record to this JSON file")
    a = p.parse_args(argv)
    paths = a.config or list(configs_by_task(a.config_dir).values())
    if len(paths) < 2:
        raise SoftPromptError(f"the comparison needs two tasks' configs or more; found {len(paths)}")
    configs = [load_config(path, a.set) for path in paths]
    record = compare_speed(configs, split=a.split, limit=a.limit, decode=DecodeOptions(a.batch_size, a.max_new_tokens))
    if a.out:
        Path(a.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(speed_line(record))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
