"""Score a trained soft prompt, or a baseline, on a task's evaluation split.

    python scripts/evaluate.py --task tx                    # latest checkpoint of configs/tx.yaml, test split
    python scripts/evaluate.py --task sum --checkpoint checkpoints/sum/epoch_006 --limit 200
    python scripts/evaluate.py --task qna --baseline hard   # no training: the init words as a plain text prompt
    python scripts/evaluate.py --config configs/smoke/qna.yaml   # offline, on the smoke run's checkpoint

Writes results/<run>/<split>/metrics.json and predictions.jsonl (a baseline:
results/<run>/<split>-baseline-hard/ or -none/) and prints one summary line:
    tx | test | n=500 | BLEU 12.34 | chrF 40.12 | checkpoint epoch_010
"""

import argparse
import sys

from softprompt.config import TASKS, load_config
from softprompt.errors import run_cli
from softprompt.evaluate import BASELINES, evaluate, summary_line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--task", choices=TASKS, help="shorthand for --config configs/<task>.yaml")
    which.add_argument("--config", help="YAML config of the run, e.g. configs/smoke/qna.yaml")
    parser.add_argument("--checkpoint", help="checkpoint folder (default: the run's latest)")
    parser.add_argument("--split", help="split to score (default: test, or validation for qna)")
    parser.add_argument("--limit", type=int, help="score only the first N examples")
    parser.add_argument("--batch-size", type=int, help="rows per generation batch (default: train.eval_batch_size)")
    parser.add_argument("--max-new-tokens", type=int, help="token limit per prediction (default: per task)")
    parser.add_argument("--num-beams", type=int, default=1, help="beam search width (default 1: greedy)")
    parser.add_argument("--baseline", choices=BASELINES,
                        help="no trained prompt: 'hard' puts the init words in front as text, 'none' nothing")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. train.output_dir=/tmp/ckpt (repeatable)")
    parser.add_argument("--results-dir", default="results", help="where results/<run>/<split>/ go (default: results)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    cfg = load_config(args.config or f"configs/{args.task}.yaml", args.set)
    metrics = evaluate(
        cfg, checkpoint=args.checkpoint, split=args.split, limit=args.limit, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, baseline=args.baseline,
        results_dir=args.results_dir, progress=not args.quiet,
    )
    print(f"wrote {metrics['results_dir']}/metrics.json and predictions.jsonl", file=sys.stderr)
    print(summary_line(metrics))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
