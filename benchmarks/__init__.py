"""The benchmark harness behind scripts/bench.py: our prompt tuning beside PEFT's, LoRA and full fine-tuning.

Not part of the installed library (it needs peft, a dev extra): run it from a checkout,
`python scripts/bench.py --quick`. harness.py runs the parts (plan, workload, variants, training, memory,
generation, storage, targets), markdown.py writes results/bench.md; eval_speed.py is scripts/bench_eval.py's.
"""
