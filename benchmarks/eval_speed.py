"""How fast one mixed pass over several tasks decodes, against separate single-task runs of the same examples.

    python scripts/bench_eval.py --config-dir configs/smoke --limit 10
    # speed | 3 tasks, n=30, batch 8 | one mixed pass 9.10 ex/s | separate runs 7.40 ex/s | 1.23x | 30/30 ...equal

Each task's latest checkpoint is a named prompt of one MultiPromptModel over
one frozen base (the configs must agree on it, as for `evaluate.py --task
all`), and its examples are loaded as evaluation loads them. A short untimed
warm-up comes first, so one-time costs (kernels, caches) count against neither
side; then the stream of all the tasks' examples is decoded once mixed
(generation.predict_mixed, what `--task all` runs) and once as one `predict`
per task over the same base. The ratio is separate time / mixed time (above
1: the mixed pass is faster); "equal" counts the examples whose prediction the
separate runs reproduce exactly (all of them, unless decoding is broken).
One process; nothing is written but what the caller does with the record.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from softprompt.checkpoint import resolve_checkpoint
from softprompt.config import Config
from softprompt.data import Examples
from softprompt.devices import pick_device
from softprompt.evaluate import check_one_base, load_examples
from softprompt.generation import DecodeOptions, predict, predict_mixed
from softprompt.hub import context_window
from softprompt.model import SoftPromptModel, build_model
from softprompt.multi import MultiPromptModel, load_prompts


def compare_speed(
    configs: Sequence[Config],
    *,
    split: str | None = None,
    limit: int | None = None,
    decode: DecodeOptions | None = None,
) -> dict[str, Any]:
    """The speed record: tasks, n, batch_size, mixed_s, separate_s, their examples/s, ratio, separate_equal."""
    cfgs = {c.task.name: c for c in configs}
    check_one_base(cfgs)
    first = next(iter(cfgs.values()))
    decode = decode or DecodeOptions()
    opts = DecodeOptions(decode.batch_size or min(c.train.eval_batch_size for c in configs), decode.max_new_tokens)
    model, tokenizer = build_model(first.model, seed=first.train.seed)
    model.to(pick_device(first.train.device, first.model.dtype))
    base_id = first.model.name_or_path
    paths = [resolve_checkpoint(cfg) for cfg in cfgs.values()]
    prompts = dict(zip(cfgs, load_prompts(model.base, paths, base_id=base_id), strict=True))
    multi = MultiPromptModel(model.base, prompts, base_id=base_id)
    window = context_window(model.base)
    examples = {
        t: load_examples(cfg, tokenizer, window, prompts[t].shape[0], split or _eval_split(cfg), limit, opts)
        for t, cfg in cfgs.items()
    }
    precision = first.train.precision
    mixed, mixed_s = _mixed(multi, tokenizer, examples, opts, precision)
    separate, separate_s = {}, 0.0
    for t, ex in examples.items():
        one = SoftPromptModel(multi.base, prompts[t].to(multi.prompts.device), base_id=base_id)
        start = time.perf_counter()
        separate[t] = predict(one, tokenizer, ex.sources, ex.task, ex.limits, opts, precision=precision, progress=False)
        separate_s += time.perf_counter() - start
    n = sum(len(p) for p in mixed.values())
    return {
        "tasks": list(examples),
        "n": n,
        "batch_size": opts.batch_size,
        "mixed_s": round(mixed_s, 3),
        "mixed_examples_per_s": round(n / mixed_s, 3),
        "separate_s": round(separate_s, 3),
        "separate_examples_per_s": round(n / separate_s, 3),
        "ratio": round(separate_s / mixed_s, 3),
        "separate_equal": sum(p == separate[t][i] for t in mixed for i, p in enumerate(mixed[t])),
    }


def _eval_split(cfg: Config) -> str:
    return cfg.data.eval_split or cfg.task.eval_split


def _mixed(multi, tokenizer, examples: dict[str, Examples], opts: DecodeOptions, precision):
    """({task: predictions} of one mixed pass, its seconds), after an untimed warm-up of one batch."""
    stream = [(t, i) for t, ex in examples.items() for i in range(len(ex.sources))]
    sources = [examples[t].sources[i] for t, i in stream]
    tasks = [examples[t].task for t, _ in stream]
    limits = [examples[t].limits[i] for t, i in stream]
    warm = min(opts.batch_size, len(sources))
    predict_mixed(multi, tokenizer, sources[:warm], tasks[:warm], [1] * warm, opts, precision=precision, progress=False)
    start = time.perf_counter()
    out = predict_mixed(multi, tokenizer, sources, tasks, limits, opts, precision=precision, progress=False)
    seconds = time.perf_counter() - start
    return {t: [out[k] for k, (s, _) in enumerate(stream) if s == t] for t in examples}, seconds


def speed_line(s: dict[str, Any]) -> str:
    """`speed | 3 tasks, n=30, batch 8 | one mixed pass 9.10 ex/s | separate runs 7.40 ex/s | 1.23x | 30/30 ...`"""
    return " | ".join(
        [
            "speed",
            f"{len(s['tasks'])} tasks, n={s['n']}, batch {s['batch_size']}",
            f"one mixed pass {s['mixed_examples_per_s']:.2f} ex/s",
            f"separate runs {s['separate_examples_per_s']:.2f} ex/s",
            f"{s['ratio']:.2f}x",
            f"{s['separate_equal']}/{s['n']} predictions equal",
        ]
    )
