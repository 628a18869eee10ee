"""The Markdown writer of the benchmark: results/bench.json's dictionary to results/bench.md's tables."""

from __future__ import annotations

import json

from .plan import ABLATIONS

ABLATION_TEXT = {
    "ours-gelunew/fp32": (
        "`model.fused_gelu: false`: GPT-2's gelu_new as loaded (eight element-wise ops) instead of the same "
        "function as one op, F.gelu(approximate='tanh'), which ours and forward run by default (PEFT, LoRA and "
        "full fine-tuning run the model as loaded)"
    ),
    "ours-ckpt/fp32": (
        "`train.gradient_checkpointing: true`: each block's activations are recomputed in the backward pass "
        "instead of kept, trading step time for memory"
    ),
    "ours-bf16base/bf16": (
        "`model.dtype: bf16` and `train.precision: bf16`: the frozen base stored in bf16 (the same weights, "
        "rounded), while the prompt, its gradient and the AdamW state stay fp32"
    ),
}
"""What each ablation row of harness.ABLATIONS changes, for the sentence under its table."""


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _load(m: dict) -> str:
    """Other processes share the cores on a developer machine: say how busy it was."""
    if not m.get("load_average_start"):
        return ""
    during = m.get("load_average_during") or {}
    text = f" Load average (1 min) {m['load_average_start'][0]:.1f} at the start"
    if during:
        text += f", {during['median']:.1f} median and {during['max']:.1f} at most during the run"
    busy = max(during.get("max", 0), m["load_average_start"][0]) > m["torch_threads"] + 0.5
    return text + (" (above the thread count: other processes shared the cores)." if busy else ".")


def render_markdown(r: dict) -> str:
    """bench.md: the run's header, the targets, then a section per measurement (and a --rows re-measure)."""
    lines = _header(r) + _targets(r)
    for name, s in r["training"].items():
        lines += _training(name, s)
    lines += _memory(r["memory"]) + _generation(r["generation"]) + _storage(r["storage"], r["plan"])
    if sub := r.get("subset"):
        lines += _subset(sub)
    lines.append("")
    return "\n".join(lines)


def _header(r: dict) -> list[str]:
    m, plan = r["machine"], r["plan"]
    model = "GPT2Config()" if not plan["model"] else "GPT2Config(**" + json.dumps(plan["model"]) + ")"
    return [
        "# Benchmark: prompt tuning vs PEFT, LoRA and full fine-tuning",
        "",
        f"Produced by `{r['command'] or 'python scripts/bench.py'}` ({plan['mode']} mode) "
        f"in {r['wall_s'] / 60:.1f} min.",
        "",
        f"Machine: {m['cpu']} ({m['logical_cpus']} logical CPUs; "
        f"bf16 units: {', '.join(m['cpu_bf16_features']) or 'none'}), "
        f"{m['torch_threads']} torch threads, device {m['device']}{' (' + m['gpu'] + ')' if m['gpu'] else ''}; "
        f"torch {m['torch']}, transformers {m['transformers']}, peft {m['peft']}.{_load(m)}",
        "",
        f"Model: GPT2LMHeadModel({model}), "
        f"random weights (seed {plan['seed']}), dropout off for every variant; prompt length {plan['prompt_length']}; "
        f"AdamW lr {plan['lr']}; warm-up steps per row {plan['warmup']}, then {plan['repeats']} timed repeat(s) of "
        f"{plan['steps']} step(s) per row, round-robin (reversed every other repeat); medians.",
        "",
    ]


def _targets(r: dict) -> list[str]:
    lines = [
        "## Targets (throughput shape)",
        "",
        "| target | measured | goal | result |",
        "| --- | --- | --- | --- |",
    ]
    for t in r["targets"]:
        measured = f"{t['measured']:,.0f} bytes" if "bytes" in t["target"] else f"{t['measured']:.2f}×"
        lines.append(f"| {t['target']} | {measured} | {t['goal']} | {'pass' if t['pass'] else 'MISS'} |")
    if r.get("subset"):
        lines += [
            "",
            "The bf16-stored base's targets come from the re-measured rows at the end, beside their own ours/fp32.",
        ]
    return lines


def _generation(g: dict) -> list[str]:
    return [
        "",
        f"## Generation (greedy, {g['new_tokens']} new tokens, {g['examples']} examples of {min(g['source_lengths'])}–"
        f"{max(g['source_lengths'])} source tokens, batches of {g['batch']} sorted by length)",
        "",
        "| method | examples/s | seconds | vs ours |",
        "| --- | ---: | ---: | ---: |",
        f"| ours: batched, KV cache | {g['ours_examples_per_s']:.3f} | {g['ours_s']:.1f} | 1.00× |",
        f"| PEFT generate | {g['peft_examples_per_s']:.3f} | {g['peft_s']:.1f} "
        f"| {g['peft_examples_per_s'] / g['ours_examples_per_s']:.2f}× |",
        f"| no-cache loop, one example at a time ({g['naive_examples']} example(s) of "
        f"{', '.join(map(str, g['naive_source_lengths']))} tokens) "
        f"| {g['naive_examples_per_s']:.4f} | {g['naive_s']:.1f} "
        f"| {g['naive_examples_per_s'] / g['ours_examples_per_s']:.3f}× |",
        "",
        f"The no-cache loop's tokens equal ours for {g['naive_matches_ours']} of its {g['naive_examples']} example(s).",
    ]


def _storage(st: dict, plan: dict) -> list[str]:
    lines = [
        "",
        "## Storage per task",
        "",
        "| method | trainable params | weights on disk | all files |",
        "| --- | ---: | ---: | ---: |",
    ]
    names = {
        "ours": "ours (prompt.safetensors + prompt.json)",
        "peft": "PEFT prompt tuning (save_pretrained)",
        "lora": f"LoRA r={plan['lora_r']} on c_attn (save_pretrained)",
        "full": "full fine-tuning (model.safetensors)",
    }
    for k, x in st.items():
        lines.append(f"| {names[k]} | {x['trainable_params']:,} | {x['weights_bytes']:,} B | {x['total_bytes']:,} B |")
    return lines


def _subset(sub: dict) -> list[str]:
    lines = [
        "",
        f"## Re-measured rows: {', '.join(sub['plan']['only'])}",
        "",
        f"Produced by `{sub['command']}` in {sub['wall_s'] / 60:.1f} min, after the run above, so these rows "
        f"compare with the ours/fp32 measured beside them, not with the tables above.{_load(sub['machine'])}",
    ]
    for name, s in sub["training"].items():
        lines += [line.replace("## ", "### ", 1) for line in _training(name, s)]
    lines += [line.replace("## ", "### ", 1) for line in _memory(sub["memory"])]
    return lines


def _training(name: str, s: dict) -> list[str]:
    """One shape's step table and the notes under it."""
    lines = []
    sh = s["shape"]
    rows = s["rows"]
    ours = rows.get("ours/fp32")
    lines += [
        "",
        f"## Training step, {name} shape (batch {sh['batch']}, source ≈{sh['source']}, target ≤{sh['target']}; "
        f"padded lengths {', '.join(map(str, s['padded_length']))})",
        "",
        "| row | trainable params | step (s) | tokens/s | forward (s) | backward (s) | optimizer (s) "
        "| step vs ours/fp32 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row, x in rows.items():
        rel = f"{x['step_s'] / ours['step_s']:.2f}×" if ours else ""
        lines.append(
            f"| {row} | {x['trainable_params']:,} | {x['step_s']:.3f} | {_num(x['tokens_per_s'])} | "
            f"{x['forward_s']:.3f} | {x['backward_s']:.3f} | {x['optimizer_s']:.3f} | {rel} |"
        )
    for row in ABLATIONS:
        if row in rows and ours:
            lines += [
                "",
                f"{row} is ours with {ABLATION_TEXT[row]}; its losses differ from ours by at most "
                f"{rows[row]['max_abs_loss_diff_vs_ours']:.1e}.",
            ]
    if s.get("peft_sanity"):
        c = s["peft_sanity"]
        lines += [
            "",
            f"Sanity: on the first batch ours' loss is {c['ours_loss']:.6f} and PEFT's {c['peft_loss']:.6f} "
            f"(|diff| {c['abs_diff']:.1e}, tolerance {c['tolerance']:.0e}: {'ok' if c['ok'] else 'FAILED'}); "
            f"largest |diff| over all {len(rows['ours/fp32']['losses'])} steps {c['max_abs_diff_all_steps']:.1e}.",
        ]
    for method, d in s["precision_drift"].items():
        lines += [
            "",
            f"fp32 vs bf16 ({method}, {d['steps']} steps from the same start on the same batches): "
            f"|loss diff| {d['abs_diff_first_step']:.2e} at step 1, "
            f"{d['abs_diff_last_step']:.2e} at step {d['steps']} "
            f"(max {d['max_abs_diff']:.2e}); trained prompts differ by at most {d['prompt_max_abs_diff']:.2e}; "
            f"scored in fp32 on batch 0 they give {d['fp32_loss_of_fp32_trained_prompt']:.6f} (fp32-trained) and "
            f"{d['fp32_loss_of_bf16_trained_prompt']:.6f} (bf16-trained).",
        ]
    return lines


def _memory(mem: dict) -> list[str]:
    lines = [
        "",
        f"## Peak memory ({mem['measure']}, fresh subprocess per row, {mem['shape']} shape, {mem['steps']} step(s))",
        "",
        "| row | peak | after building the model | training adds |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row, x in mem["rows"].items():
        lines.append(
            f"| {row} | {_mib(x['peak_bytes'])} | {_mib(x['after_build_bytes'])} "
            f"| {_mib(x['peak_bytes'] - x['after_build_bytes'])} |"
        )
    return lines
