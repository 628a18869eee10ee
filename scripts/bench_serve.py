"""Benchmark serving: one multi-prompt server vs the same unbatched vs three single-task servers.

    nice python scripts/bench_serve.py        # the smoke prompts in checkpoints/ (train them first), 1/4/16 clients
    nice python scripts/bench_serve.py --clients 1,4 --per-client 4 --out /tmp/sb    # shorter

Needs checkpoints/smoke-{qna,sum,tx} (python scripts/train.py --config configs/smoke/TASK.yaml). Writes
serve_bench.md and serve_bench.json to --out (default results/); docs/serving.md shows the figures.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ sits beside scripts/, not installed

from benchmarks.serve_bench import run_serve_bench  # noqa: E402
from softprompt.cli import run_cli  # noqa: E402
from softprompt.config import load_config  # noqa: E402
from softprompt.data import load_raw  # noqa: E402
from softprompt.generate import source_record  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-dir", default="configs/smoke", help="where <task>.yaml is, for the test records")
    p.add_argument("--checkpoints", default="checkpoints", help="where the smoke-<task> run folders are")
    p.add_argument("--clients", default="1,4,16", help="concurrent clients, comma-separated")
    p.add_argument("--per-client", type=int, default=8, help="requests per client (at least 24 per run)")
    p.add_argument("--records", type=int, default=8, help="test records per task in the request mix")
    p.add_argument("--threads", type=int, default=2, help="torch threads per setup in all")
    p.add_argument("--out", default="results")
    a = p.parse_args(argv)
    prompts, records = {}, {}
    for task in ("qna", "sum", "tx"):
        cfg = load_config(Path(a.config_dir) / f"{task}.yaml")
        prompts[task] = Path(a.checkpoints) / cfg.run_name
        split = cfg.data.eval_split or cfg.task.eval_split
        rows = list(load_raw(cfg, (split,), cap_eval=False)[split])[: a.records]
        # Only the fields the task's source reads go into a request (a record's answers stay out).
        records[task] = [source_record(cfg.task, r) for r in rows]
    clients = tuple(int(c) for c in a.clients.split(","))
    run_serve_bench(prompts, records, clients, a.per_client, out=a.out, threads=a.threads)
    print((Path(a.out) / "serve_bench.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
