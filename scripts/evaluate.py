"""Score trained soft prompts, or a baseline, on a task's evaluation split; or all tasks in one pass.

    python scripts/evaluate.py --task tx                    # latest checkpoint of configs/tx.yaml, test split
    python scripts/evaluate.py --task sum --checkpoint checkpoints/sum/epoch_006 --limit 200
    python scripts/evaluate.py --task qna --baseline hard   # no training: the init words as a plain text prompt
    python scripts/evaluate.py --config configs/smoke/qna.yaml --baseline text --prompt-text "reply with the place"
    python scripts/evaluate.py --config configs/smoke/qna.yaml   # offline, on the smoke run's checkpoint
    python scripts/evaluate.py --config configs/smoke/qna.yaml --with-baselines   # and both baselines beside it
    python scripts/evaluate.py --task all --config-dir configs/smoke   # three tasks, one frozen model, one pass
    python scripts/evaluate.py --task qna --ensemble checkpoints/qna-s1 checkpoints/qna-s2   # prompt ensemble

Writes results/<run>/<split>/metrics.json and predictions.jsonl (a baseline:
<split>-baseline-hard/ or -none/; an ensemble: <split>-ensemble/; --task all:
<split>-all/ of each task) and prints one summary line per task:
    tx | test | n=500 | BLEU 12.34 | chrF 40.12 | checkpoint epoch_010
--task all adds a line comparing its speed with three separate runs:
    speed | 3 tasks, n=30, batch 8 | one mixed pass 77.67 ex/s | separate runs 52.70 ex/s | 1.47x | 30/30 ...
"""

import argparse
import sys

from softprompt.config import TASKS, load_config
from softprompt.errors import SoftPromptError, run_cli
from softprompt.evaluate import BASELINES, config_paths, evaluate, evaluate_all, speed_line, summary_line


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--task",
        choices=(*TASKS, "all"),
        help="shorthand for --config configs/<task>.yaml; all: every task in one pass",
    )
    parser.add_argument(
        "--config",
        action="append",
        help="YAML config of the run, e.g. configs/smoke/qna.yaml (repeat: several tasks in one pass)",
    )
    parser.add_argument("--config-dir", help="where --task finds <task>.yaml (default: configs), e.g. configs/smoke")
    parser.add_argument("--checkpoint", help="checkpoint folder (default: the run's latest)")
    parser.add_argument(
        "--ensemble",
        nargs="+",
        metavar="CKPT",
        help="checkpoints (or run folders) of the task to decode as one greedy prompt ensemble",
    )
    parser.add_argument("--split", help="split to score (default: data.eval_split, else test, or validation for qna)")
    parser.add_argument(
        "--limit", type=int, help="score a seeded random sample of N examples (of each task); default: the whole split"
    )
    parser.add_argument("--batch-size", type=int, help="rows per generation batch (default: train.eval_batch_size)")
    parser.add_argument("--max-new-tokens", type=int, help="token limit per prediction (default: per task)")
    parser.add_argument("--num-beams", type=int, default=1, help="beam search width (default 1: greedy)")
    parser.add_argument(
        "--baseline",
        choices=BASELINES,
        help="no trained prompt: 'hard' puts the init words in front as text, 'none' nothing, 'text' the --prompt-text",
    )
    parser.add_argument(
        "--with-baselines",
        action="store_true",
        help="one task: score the trained prompt, then the none and hard baselines, one line each",
    )
    parser.add_argument("--prompt-text", help="the text for --baseline text (e.g. the built-in model's instruction)")
    parser.add_argument(
        "--no-compare", action="store_true", help="several tasks: skip timing the separate single-task runs"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (of every config), e.g. train.output_dir=/tmp/ckpt (repeatable)",
    )
    parser.add_argument("--results-dir", default="results", help="where results/<run>/<split>/ go (default: results)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    configs = [load_config(path, args.set) for path in config_paths(args.task, args.config, args.config_dir)]
    common = dict(
        split=args.split,
        limit=args.limit,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        results_dir=args.results_dir,
        progress=not args.quiet,
    )
    if args.with_baselines and (len(configs) > 1 or args.baseline or args.ensemble):
        raise SoftPromptError(
            "--with-baselines scores one task's trained prompt; it excludes --baseline, --ensemble and several tasks"
        )
    if len(configs) == 1:
        results = {
            configs[0].task: evaluate(
                configs[0],
                checkpoint=args.checkpoint,
                baseline=args.baseline,
                ensemble=args.ensemble,
                prompt_text=args.prompt_text,
                **common,
            )
        }
        if args.with_baselines:
            for baseline in ("none", "hard"):
                results[baseline] = evaluate(configs[0], baseline=baseline, **common)
    elif args.checkpoint or args.baseline or args.ensemble or args.prompt_text:
        raise SoftPromptError(
            "--checkpoint, --baseline and --ensemble score one task; several tasks in one pass "
            "use each task's latest checkpoint"
        )
    else:
        results = evaluate_all(configs, compare=not args.no_compare, **common)
    for metrics in results.values():
        print(f"wrote {metrics['results_dir']}/metrics.json and predictions.jsonl", file=sys.stderr)
        print(summary_line(metrics))
    if len(configs) > 1:
        print(speed_line(results))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
