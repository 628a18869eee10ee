"""Export a trained prompt as a PEFT adapter (PROMPT_TUNING, P_TUNING or PREFIX_TUNING, by its method).

    python scripts/export_peft.py checkpoints/sum/epoch_009 out/sum-peft

Then, in Python:

    from peft import PeftModel
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("gpt2"), "out/sum-peft")

A prompt trained on builtin:tiny-gpt2 names that model's local cache folder as
its base, so the adapter loads on this machine only.
"""

import argparse

from softprompt.cli import run_cli
from softprompt.peft_compat import ADAPTER_CONFIG, ADAPTER_WEIGHTS, export_peft


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint or prompt folder, e.g. checkpoints/sum/epoch_009")
    parser.add_argument("out", help="the adapter folder to write, e.g. out/sum-peft")
    parser.add_argument("--base-model", help="base model id or folder to record (default: the one the prompt names)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    out = export_peft(args.checkpoint, args.out, base_model=args.base_model)
    print(f"wrote {out / ADAPTER_CONFIG} and {out / ADAPTER_WEIGHTS}")


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
