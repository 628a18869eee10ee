"""benchmarks/targets.py: each target's verdict is its measured ratio against its goal, named by what it measures."""

import pytest

from benchmarks.targets import targets


def _results(ours_tps=300.0, peft_tps=200.0, full_tps=100.0, ours_peak=1.0, peft_peak=2.0, bf16=True):
    rows = {
        "ours/fp32": {"tokens_per_s": ours_tps, "step_s": 1.0},
        "peft/fp32": {"tokens_per_s": peft_tps, "step_s": 1.5},
        "full/fp32": {"tokens_per_s": full_tps, "step_s": 3.0},
        "forward/fp32": {"tokens_per_s": 900.0, "step_s": 0.6},
    }
    memory = {"ours/fp32": {"peak_bytes": ours_peak}, "peft/fp32": {"peak_bytes": peft_peak}}
    if bf16:
        rows["ours-bf16base/bf16"] = {"tokens_per_s": 500.0, "step_s": 0.6}
        memory["ours-bf16base/bf16"] = {"peak_bytes": 0.5 * ours_peak}
    return {
        "training": {
            "reference": {"shape": {"batch": 2}, "rows": {}},
            "throughput": {"shape": {"batch": 8}, "rows": rows},
        },
        "memory": {"rows": memory},
        "generation": {"ours_examples_per_s": 40.0, "naive_examples_per_s": 1.0, "peft_examples_per_s": 30.0},
        "storage": {"ours": {"total_bytes": 12_532}},
    }


def test_targets_measure_at_the_throughput_shape_and_judge_each_goal():
    got = {t["target"]: t for t in targets(_results())}
    assert len(got) == 9 and all(t["pass"] for t in got.values())
    assert got["our training tokens/s ≥ 1.3× PEFT prompt tuning's"]["measured"] == pytest.approx(1.5)
    assert got["our step / no-grad full-logits forward ≤ 1.8"]["measured"] == pytest.approx(1.0 / 0.6)
    assert got["prompt checkpoint < 16 KiB (bytes, safetensors + JSON)"]["measured"] == 12_532
    assert not any("issue" in name or "#" in name for name in got)  # named by what they measure


def test_a_missed_goal_is_a_miss_and_a_run_without_the_bf16_rows_has_no_bf16_targets():
    got = {t["target"]: t["pass"] for t in targets(_results(ours_tps=210.0, ours_peak=3.0, bf16=False))}
    assert got["our training tokens/s ≥ 1.3× PEFT prompt tuning's"] is False  # 1.05×
    assert got["our training tokens/s ≥ 2× full fine-tuning's"] is True  # 2.1×
    assert got["our peak training memory ≤ PEFT's (ours / PEFT)"] is False  # 1.5×
    assert len(got) == 7 and not any(name.startswith("bf16-stored") for name in got)
