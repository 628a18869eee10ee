"""The benchmark harness behind scripts/bench.py: our prompt tuning beside PEFT's, LoRA and full fine-tuning.

Not part of the installed library (it needs peft, a dev extra): run it from a checkout,
`python scripts/bench.py --quick`. harness.py measures, markdown.py writes results/bench.md.
"""
