"""Write a trained prompt, put before your inputs, as the embeddings a `prompt_embeds` API takes (vLLM).

    python scripts/export_embeds.py --config configs/smoke/sum.yaml --text "Article text ..." --output embeds.jsonl
    python scripts/export_embeds.py --config configs/smoke/qna.yaml --input questions.jsonl --output embeds.jsonl

Each output line is {"prompt_embeds": base64 safetensors ([P + L, H], key "prompt_embeds"), "shape", "dtype",
"max_tokens", "input"}: the soft prompt followed by the embeddings of the input formatted with the task's
template (as generate.py formats it), for one greedy request of at most max_tokens new tokens.
docs/serving.md shows how to send it to vLLM (--enable-prompt-embeds), and what of that was run here.
"""

import argparse
import json
import sys

from softprompt.cli import run_cli
from softprompt.config import load_config
from softprompt.embeds import encode_embeds, prompted_embeddings
from softprompt.generate import Generator, encode_all, read_inputs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config of the run, e.g. configs/smoke/sum.yaml")
    p.add_argument("--text", action="append", help="an input text (repeatable)")
    p.add_argument("--input", help="JSON Lines file of records (the task's fields, or a 'text' field)")
    p.add_argument("--output", required=True, help="JSON Lines file to write")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the run's latest)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    a = p.parse_args(argv)
    if bool(a.text) == bool(a.input):
        p.error("give --text (repeatable) or --input, one of them")
    items, where = read_inputs(a.input) if a.input else (a.text, [f"--text {i + 1}" for i in range(len(a.text))])
    gen = Generator.load(load_config(a.config, a.set), a.checkpoint)
    sources, _ = encode_all(gen, items, where)
    with open(a.output, "w", encoding="utf-8") as f:
        for item, source in zip(items, sources, strict=True):
            embeds = prompted_embeddings(gen.model, source)
            row = {"prompt_embeds": encode_embeds(embeds), "shape": list(embeds.shape), "dtype": str(embeds.dtype)}
            f.write(json.dumps({**row, "max_tokens": gen.limit(None), "input": item}, ensure_ascii=False) + "\n")
    print(f"wrote {len(items)} prompt embeddings to {a.output}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
