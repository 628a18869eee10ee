"""Run a trained prompt on your own input: a text, a JSON Lines file of records, or lines on stdin.

    python scripts/generate.py --config configs/smoke/sum.yaml --text "Article text ..."
    python scripts/generate.py --config configs/smoke/qna.yaml --input questions.jsonl --output answers.jsonl
    printf 'one text\\nanother\\n' | python scripts/generate.py --config configs/smoke/tx.yaml   # one per line
    python scripts/generate.py --config configs/smoke/sum.yaml --text "..." --temperature 0.8 --top-p 0.9 --seed 1
    python scripts/generate.py --config configs/smoke/sum.yaml --text "..." --baseline hard   # no trained prompt

Inputs are formatted with the task's template exactly as training and evaluation format them; a record holds
the task's source fields (qna: context, question; sum: article; tx: translation.bg), a text fills the body field.
Greedy by default. Predictions go to stdout (one per line) or, with --output, to JSON Lines (record + prediction).
"""

import argparse
import json
import sys

from softprompt.cli import run_cli
from softprompt.config import load_config
from softprompt.errors import SoftPromptError
from softprompt.evaluate import BASELINES
from softprompt.generate import Generator, Sampling, check_inputs, encode_all, output_record, read_inputs


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--config", required=True, help="YAML config of the run, e.g. configs/smoke/sum.yaml")
    add("--text", action="append", help="an input text (repeatable); none and no --input: lines on stdin")
    add("--input", help="JSON Lines file of records (the task's fields, or a 'text' field)")
    add("--output", help="write JSON Lines (each record with its prediction) here instead of stdout")
    add("--checkpoint", help="checkpoint folder (default: the run's latest)")
    add("--baseline", choices=BASELINES, help="no trained prompt: none, hard (the init words) or text")
    add("--prompt-text", help="the text for --baseline text")
    add("--max-new-tokens", type=int, help="token limit per prediction (default: the task's, as evaluation)")
    add("--temperature", type=float, default=0.0, help="0 (default): greedy; above 0: sampling")
    add("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --temperature)")
    add("--seed", type=int, default=0, help="seed of each sampled input (with --temperature)")
    add("--batch-size", type=int, help="rows per generation batch (default: train.eval_batch_size)")
    add("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")
    add("--quiet", action="store_true", help="no progress bar")
    add("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


def inputs(a):
    if a.text and a.input:
        raise SoftPromptError("give --text or --input, not both")
    if a.input:
        return read_inputs(a.input)
    texts = a.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    return texts, [f"--text {i}" if a.text else f"stdin line {i}" for i in range(1, len(texts) + 1)]


def main(argv=None):
    a = parse(argv)
    if (a.top_p != 1.0 or a.seed) and not a.temperature:
        raise SoftPromptError("--top-p and --seed go with --temperature above 0 (sampling); greedy takes neither")
    if a.batch_size is not None and a.batch_size < 1:
        raise SoftPromptError(f"--batch-size must be at least 1, got {a.batch_size}")
    sampling = Sampling(a.temperature, a.top_p, a.seed)
    cfg = load_config(a.config, a.set)
    items, where = inputs(a)
    check_inputs(cfg.task, items, where)  # a bad input fails before the model loads
    gen = Generator.load(cfg, a.checkpoint, baseline=a.baseline, prompt_text=a.prompt_text)
    sources, cut = encode_all(gen, items, where)
    if cut:
        print(f"note: {cut} of {len(items)} inputs were cut to the {gen.budget}-token source budget", file=sys.stderr)
    progress = not a.quiet and a.input is not None
    predictions = gen.predict_sources(sources, a.max_new_tokens, sampling, a.batch_size, progress)
    if a.output is None:
        for prediction in predictions:
            print(prediction)
        return
    with open(a.output, "w", encoding="utf-8") as f:
        for item, prediction in zip(items, predictions, strict=True):
            f.write(json.dumps(output_record(item, prediction), ensure_ascii=False) + "\n")
    print(f"wrote {len(predictions)} predictions to {a.output}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
