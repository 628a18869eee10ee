"""Score trained soft prompts, or a baseline, on a task's evaluation split; or all tasks in one pass.

    python scripts/evaluate.py --task sum --limit 200       # the config in configs/ with task: sum, test split
    python scripts/evaluate.py --task sum --resume          # continue an interrupted evaluation where it stopped
    python scripts/evaluate.py --task all --config-dir configs/smoke   # every config there (one per task), one pass
    torchrun --nproc_per_node 4 scripts/evaluate.py --task sum   # 4 ranks share the batches; rank 0 writes, prints
--task finds configs by their `task:` key among the YAML files directly in --config-dir (file names do not
matter). Each evaluation prints one summary line per task, e.g.
    tx | test | n=500 | BLEU 12.34 | chrF 40.12 | checkpoint epoch_010
How the one pass over all tasks compares with separate runs: python scripts/bench_eval.py (a benchmark).
"""

import argparse
import sys

from softprompt.cli import run_cli
from softprompt.config import configs_by_task, load_config
from softprompt.errors import SoftPromptError
from softprompt.evaluate import BASELINES, DecodeOptions, Prompting, evaluate, evaluate_all, speed_line, summary_line
from softprompt.parallel import process_group
from softprompt.tasks import TASKS


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--task", choices=(*TASKS, "all"), help="the config in --config-dir whose task: is this; all: every one there")
    add("--config", action="append", help="YAML config of the run (repeat: several tasks in one pass)")
    add("--config-dir", help="where --task finds configs by their task: key (default: configs), e.g. configs/smoke")
    add("--checkpoint", help="checkpoint folder (default: the run's latest)")
    add("--ensemble", nargs="+", metavar="CKPT", help="checkpoints (or run folders) decoded as one greedy ensemble")
    add("--split", help="split to score (default: data.eval_split, else the task's)")
    add("--limit", type=int, help="score a seeded random sample of N examples (of each task); default: all")
    add("--batch-size", type=int, help="rows per generation batch (default: train.eval_batch_size)")
    add("--max-new-tokens", type=int, help="token limit per prediction (default: data.max_target_tokens)")
    add("--num-beams", type=int, default=1, help="beam search width (default 1: greedy)")
    add("--baseline", choices=BASELINES, help="no trained prompt: hard (the init words as text), none, or text")
    add("--prompt-text", help="the text for --baseline text (e.g. the built-in model's instruction)")
    add("--with-baselines", action="store_true", help="one task: the trained prompt, then the none and hard baselines")
    add("--resume", action="store_true", help="continue from predictions.partial.jsonl of an interrupted run")
    add("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")
    add("--results-dir", default="results", help="where results/<run>/<split>/ go (default: results)")
    add("--quiet", action="store_true", help="no progress bar")
    add("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


def config_paths(a) -> list[str]:  # --task T, --task all, or one --config per task
    if (a.task is None) == (not a.config):
        raise SoftPromptError(f"give either --task ({', '.join(TASKS)} or all) or --config FILE (repeatable)")
    if a.config and a.config_dir is not None:
        raise SoftPromptError("--config-dir goes with --task; --config names its file itself")
    if a.config:
        return list(a.config)
    folder = a.config_dir or "configs"
    found = configs_by_task(folder)
    if a.task != "all" and a.task not in found:
        raise SoftPromptError(f"no config in {folder} has task: {a.task} (tasks there: {', '.join(found) or 'none'})")
    if not found:
        raise SoftPromptError(f"no config in {folder} has a task: key")
    return [str(p) for t, p in found.items() if a.task in ("all", t)]


def flag_problems(a, configs) -> list[str]:  # every contradiction among the flags, in the flags' own words
    several, text = len(configs) > 1, (a.prompt_text or "").strip()
    chosen = sum(map(bool, (a.checkpoint, a.baseline, a.ensemble)))
    sized = {f"--{k.replace('_', '-')}": getattr(a, k) for k in ("limit", "batch_size", "max_new_tokens", "num_beams")}
    checks = {f"{f} must be at least 1, got {v}": v is not None and v < 1 for f, v in sized.items()}
    c = min(configs, key=lambda c: c.data.max_target_tokens)  # the tightest room for --max-new-tokens
    checks[f"--max-new-tokens {a.max_new_tokens} is more than data.max_target_tokens ({c.data.max_target_tokens}) "
           f"of {c.source}; raise it with --set"] = (a.max_new_tokens or 0) > c.data.max_target_tokens  # fmt: skip
    checks |= {
        "--baseline text needs a non-empty --prompt-text, and only it": (a.baseline == "text") != bool(text),
        "--checkpoint, --baseline and --ensemble exclude each other": chosen > 1,
        "--ensemble decodes greedily (the prompts' log-probabilities are averaged at each step); it cannot be "
        f"combined with beam search (--num-beams {a.num_beams})": bool(a.ensemble and a.num_beams > 1),
        "--with-baselines scores one task's trained prompt; it excludes --baseline, --ensemble and several "
        "tasks": a.with_baselines and bool(several or a.baseline or a.ensemble),
        "--checkpoint, --baseline and --ensemble score one task; several tasks in one pass use each task's latest "
        "checkpoint": several and bool(a.checkpoint or a.baseline or a.ensemble or a.prompt_text),
        "--resume continues one task's evaluation; --task all writes at the end": several and a.resume,
    }
    return [message for message, bad in checks.items() if bad]


def prompting(a) -> Prompting:  # how the prompt is applied, from the flags flag_problems has checked
    if a.baseline:
        return Prompting.baseline(a.baseline, a.prompt_text)
    return Prompting.ensemble(a.ensemble) if a.ensemble else Prompting(checkpoint=a.checkpoint)


def main(argv=None):
    a = parse(argv)
    configs = [load_config(path, a.set) for path in config_paths(a)]
    if problems := flag_problems(a, configs):
        raise SoftPromptError("; ".join(problems))
    common = dict(split=a.split, limit=a.limit, results_dir=a.results_dir, progress=not a.quiet)
    common["decode"] = DecodeOptions(a.batch_size, a.max_new_tokens, a.num_beams)
    with process_group(configs[0]) as d:  # under torchrun; each evaluation returns rank 0's metrics on every rank
        if len(configs) > 1:
            results = evaluate_all(configs, **common)
        else:
            results = {configs[0].task.name: evaluate(configs[0], prompting(a), resume=a.resume, **common)}
            for baseline in ("none", "hard") if a.with_baselines else ():
                results[baseline] = evaluate(configs[0], Prompting.baseline(baseline), resume=a.resume, **common)
    for metrics in results.values() if d.main else ():
        resumed = f" ({metrics['resumed']} predictions read back from the partial file)" if "resumed" in metrics else ""
        print(f"wrote {metrics['results_dir']}/metrics.json and predictions.jsonl{resumed}", file=sys.stderr)
        print(summary_line(metrics))
    if len(configs) > 1 and d.main:
        print(speed_line(results))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
