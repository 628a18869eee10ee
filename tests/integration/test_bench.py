"""scripts/bench.py end to end on a toy model: it runs and writes both result files. No timing is checked
(a benchmark is not a test: CI machines are noisy)."""

import json
import operator

from benchmarks.plan import ABLATIONS, ROWS, make_plan
from conftest import run_script


def test_bench_quick_tiny_writes_json_and_markdown(tmp_path):
    proc = run_script("bench.py", "--quick", "--tiny", "--steps", "1", "--out", str(tmp_path), timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert {"command", "plan", "machine", "training", "generation", "memory", "storage", "targets", "wall_s"} <= set(
        results
    )
    assert {"cpu", "torch_threads", "torch", "device"} <= set(results["machine"])

    assert set(results["training"]) == {"reference", "throughput"}
    for shape in results["training"].values():
        assert set(shape["rows"]) == set(ROWS + ABLATIONS)
        for row in shape["rows"].values():
            assert {"step_s", "tokens_per_s", "forward_s", "backward_s", "optimizer_s", "trainable_params"} <= set(row)
        assert shape["peft_sanity"]["ok"]  # ours and PEFT computed the same loss on the first batch
        assert set(shape["precision_drift"]) == {"ours", "peft"}
        assert (
            shape["rows"]["ours/fp32"]["trainable_params"] == shape["rows"]["peft/fp32"]["trainable_params"] == 4 * 64
        )

    gen = results["generation"]
    assert {"ours_examples_per_s", "peft_examples_per_s", "naive_examples_per_s", "naive_matches_ours"} <= set(gen)
    assert gen["naive_matches_ours"] == gen["naive_examples"]  # the no-cache loop makes the same tokens
    assert set(results["storage"]) == {"ours", "peft", "lora", "full"}
    assert set(results["storage"]["ours"]["files"]) == {"prompt.safetensors", "prompt.json"}
    memory = results["memory"]["rows"]
    assert set(memory) == set(make_plan("tiny").memory_rows)  # one fresh subprocess per planned row, none lost
    assert all(0 < r["after_build_bytes"] <= r["peak_bytes"] for r in memory.values())
    assert len(results["targets"]) == 9
    compare = {">=": operator.ge, "<=": operator.le, "<": operator.lt}
    for t in results["targets"]:  # each verdict is its measured figure against its goal (pass or miss alike)
        op, goal = t["goal"].split()
        assert t["pass"] is compare[op](t["measured"], float(goal)) and t["measured"] > 0, t

    md = (tmp_path / "bench.md").read_text(encoding="utf-8")
    assert md.startswith("# Benchmark") and "python scripts/bench.py --quick --tiny --steps 1" in md
    for heading in (
        "## Targets",
        "## Training step, throughput shape",
        "## Peak memory",
        "## Generation",
        "## Storage",
    ):
        assert heading in md

    # --rows re-measures a few rows and files them beside the run above, which stays as it was.
    rows = "ours/fp32,ours-bf16base/bf16"
    proc = run_script("bench.py", "--tiny", "--rows", rows, "--out", str(tmp_path), timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert {k: v for k, v in again.items() if k not in ("subset", "targets")} == {
        k: v for k, v in results.items() if k != "targets"
    }
    sub = again["subset"]
    assert set(sub["memory"]["rows"]) == set(rows.split(","))
    assert all(set(s["rows"]) == set(rows.split(",")) for s in sub["training"].values())
    assert "## Re-measured rows: ours/fp32, ours-bf16base/bf16" in (tmp_path / "bench.md").read_text(encoding="utf-8")
