"""The benchmark's targets, each named by what it measures: a measured figure, its goal, pass or miss.

    targets(results)   # [{"target": "our training tokens/s ≥ 1.3× PEFT prompt tuning's", "measured": 1.52,
                       #   "goal": ">= 1.3", "pass": True}, ...]

Training speed and memory, generation speed and checkpoint size are judged at
the throughput shape (the largest batch timed); the bf16-stored base against
the fp32 base measured in the same run (a --rows re-measure, when there is one).
"""

from __future__ import annotations

Check = tuple[str, float, str, float]
"""(what is measured, the measured figure, the comparison, the goal)."""

_COMPARE = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}


def targets(results: dict) -> list[dict]:
    """Every target with its measured figure and whether it passes."""
    checks = [
        *training_speed(results),
        *training_memory(results),
        *generation_speed(results),
        *checkpoint_size(results),
        *bf16_storage(results.get("subset") or results),
    ]
    return [{"target": t, "measured": m, "goal": f"{c} {g}", "pass": _COMPARE[c](m, g)} for t, m, c, g in checks]


def _throughput_rows(results: dict) -> dict:
    return max(results["training"].values(), key=lambda s: s["shape"]["batch"])["rows"]


def training_speed(results: dict) -> list[Check]:
    """Our tokens/s against PEFT prompt tuning's and full fine-tuning's; our step against a bare forward pass."""
    rows = _throughput_rows(results)
    ours = rows["ours/fp32"]["tokens_per_s"]
    step = rows["ours/fp32"]["step_s"] / rows["forward/fp32"]["step_s"]
    return [
        ("our training tokens/s ≥ 1.3× PEFT prompt tuning's", ours / rows["peft/fp32"]["tokens_per_s"], ">=", 1.3),
        ("our training tokens/s ≥ 2× full fine-tuning's", ours / rows["full/fp32"]["tokens_per_s"], ">=", 2.0),
        ("our step / no-grad full-logits forward ≤ 1.8", step, "<=", 1.8),
    ]


def training_memory(results: dict) -> list[Check]:
    mem = results["memory"]["rows"]
    ratio = mem["ours/fp32"]["peak_bytes"] / mem["peft/fp32"]["peak_bytes"]
    return [("our peak training memory ≤ PEFT's (ours / PEFT)", ratio, "<=", 1.0)]


def generation_speed(results: dict) -> list[Check]:
    gen = results["generation"]
    ours = gen["ours_examples_per_s"]
    return [
        ("our generation ≥ 20× the no-cache loop (examples/s)", ours / gen["naive_examples_per_s"], ">=", 20.0),
        ("our generation no slower than PEFT's generate (ours / PEFT)", ours / gen["peft_examples_per_s"], ">=", 1.0),
    ]


def checkpoint_size(results: dict) -> list[Check]:
    size = results["storage"]["ours"]["total_bytes"]
    return [("prompt checkpoint < 16 KiB (bytes, safetensors + JSON)", size, "<", 16 * 1024)]


def bf16_storage(results: dict) -> list[Check]:
    """model.dtype: bf16 against the fp32 base in the same run: peak memory at the memory shape, step time at
    the largest shape that timed both (judged on a CPU with bf16 units); none when the run lacks either row."""
    row, fp32 = "ours-bf16base/bf16", "ours/fp32"
    mem = results["memory"]["rows"]
    shapes = [s for s in results["training"].values() if row in s["rows"] and fp32 in s["rows"]]
    if row not in mem or fp32 not in mem or not shapes:
        return []
    step = max(shapes, key=lambda s: s["shape"]["batch"])
    return [
        (
            "bf16-stored base: peak training memory ≤ 0.6× the fp32 base's",
            mem[row]["peak_bytes"] / mem[fp32]["peak_bytes"],
            "<=",
            0.6,
        ),
        (
            f"bf16-stored base: step ≤ 0.7× the fp32 base's (batch {step['shape']['batch']})",
            step["rows"][row]["step_s"] / step["rows"][fp32]["step_s"],
            "<=",
            0.7,
        ),
    ]
