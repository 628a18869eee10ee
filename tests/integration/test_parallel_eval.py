"""Evaluation under torchrun (2 CPU ranks, gloo) writes what one process writes.

The session's smoke trainings (conftest.py) make the checkpoints. Two launches cover the cases: the script
itself (tuned prompt resumed from a single process's partial file, then the none and hard baselines), and a
small driver calling the library (errors on one rank, an ensemble, every registered task in one pass).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TASK_NAMES, free_port, smoke_config
from softprompt import parallel
from softprompt.config import load_config
from softprompt.distributed import Dist
from softprompt.evaluate import Prompting, evaluate, evaluate_all
from softprompt.generation import DecodeOptions, length_batches, predict, predict_mixed, share_of
from softprompt.model import SoftPromptModel, init_prompt
from softprompt.multi import MultiPromptModel
from softprompt.results import METRICS_FILE, PARTIAL_FILE, PREDICTIONS_FILE, PartialPredictions
from softprompt.tasks import get_task

TIMINGS = {"generation_s", "examples_per_s", "wall_time_s", "results_dir", "world_size", "speed"}
SPEED_TIMINGS = {"mixed_s", "mixed_examples_per_s"}
VARIANTS = ("validation", "validation-baseline-none", "validation-baseline-hard")
DECODE = DecodeOptions(batch_size=2, max_new_tokens=6)  # 9 examples: 5 batches, 3 on rank 0 and 2 on rank 1


def test_ranks_decode_interleaved_batches_that_reassemble_to_the_single_process_predictions(tiny):
    base, tokenizer = tiny
    texts = [f"Context: {'the river runs east ' * (i % 4 + 1)}\nQuestion: where {i}?\nAnswer:" for i in range(9)]
    sources = [tokenizer(t)["input_ids"] for t in texts]
    plan = length_batches(sources, 2)
    assert [share_of(plan, (r, 2)) for r in (0, 1)] == [[plan[0], plan[2], plan[4]], [plan[1], plan[3]]]
    assert share_of(plan, (0, 1)) == plan

    model = SoftPromptModel(base, init_prompt(base, tokenizer, "random", 4, seed=1))
    task, limits, opts = get_task("qna"), [5] * 9, DecodeOptions(2)
    one = predict(model, tokenizer, sources, task, limits, opts, progress=False)
    shares = [predict(model, tokenizer, sources, task, limits, opts, progress=False, share=(r, 2)) for r in (0, 1)]
    # Each row is decoded by exactly one rank, and merged by index they are the single process's predictions.
    assert [sum(s[i] is not None for s in shares) for i in range(9)] == [1] * 9
    assert [a if a is not None else b for a, b in zip(*shares, strict=True)] == one and any(one)
    assert sum(x is not None for x in shares[0]) == 5  # the odd batch out: 3 batches (2 + 2 + 1) against 2 (2 + 2)

    # The mixed pass shares its own plan the same way (rows of two tasks, two prompts).
    multi = MultiPromptModel(base, {"qna": model.prompt.detach(), "sum": model.prompt.detach() * 0.5})
    tasks = [get_task("qna" if i % 2 else "sum") for i in range(9)]
    mixed = predict_mixed(multi, tokenizer, sources, tasks, limits, opts, progress=False)
    rows = {}
    for r in (0, 1):
        rows |= parallel.gather_predictions(
            lambda on_batch, r=r: predict_mixed(
                multi, tokenizer, sources, tasks, limits, opts, progress=False, share=(r, 2), on_batch=on_batch
            ),
            Dist(),  # in one process the rows arrive as each batch finishes
            "cpu",
        )
    assert [rows[i] for i in range(9)] == mixed and parallel.all_gather_json({"a": [1]}, Dist()) == [{"a": [1]}]


def _torchrun(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
        + list(args),
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _same_metrics(one: dict, two: dict) -> None:
    """Everything but the timings (and where the files went) is equal; world_size says how it ran."""
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert {k: v for k, v in one.items() if k not in TIMINGS} == {k: v for k, v in two.items() if k not in TIMINGS}
    if "speed" in one:
        assert {k: v for k, v in one["speed"].items() if k not in SPEED_TIMINGS} == {
            k: v for k, v in two["speed"].items() if k not in SPEED_TIMINGS
        }


@pytest.fixture(scope="module")
def script(evaluate_script):
    return evaluate_script


def _metrics(folder):
    return json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))


def test_two_ranks_write_the_single_process_files_and_resume_its_partial_file(smoke_overrides, script, tmp_path):
    sets = [a for o in smoke_overrides for a in ("--set", o)]
    argv = ["--config", "tests/configs/smoke/qna.yaml", *sets, "--limit", "9", "--batch-size", "2"]
    argv += ["--max-new-tokens", "6", "--with-baselines", "--quiet"]
    assert script(*argv, "--results-dir", str(tmp_path / "one")) == 0

    # A single process stopped after 2 of the tuned prompt's 5 batches; 2 ranks continue its partial file.
    cfg = load_config("tests/configs/smoke/qna.yaml", smoke_overrides)
    real = PartialPredictions.append
    calls = []

    def append(self, indices, predictions):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(indices)
        real(self, indices, predictions)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(PartialPredictions, "append", append)
        with pytest.raises(KeyboardInterrupt):
            evaluate(cfg, limit=9, decode=DECODE, results_dir=tmp_path / "two", progress=False)
    assert (tmp_path / "two" / "smoke-qna" / "validation" / PARTIAL_FILE).is_file()

    run = _torchrun(
        str(ROOT / "scripts" / "evaluate.py"), *argv, "--resume", "--set", "train.dist_timeout_minutes=2",
        "--results-dir", str(tmp_path / "two"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    for variant in VARIANTS:
        one, two = tmp_path / "one" / "smoke-qna" / variant, tmp_path / "two" / "smoke-qna" / variant
        assert (one / PREDICTIONS_FILE).read_bytes() == (two / PREDICTIONS_FILE).read_bytes(), variant
        m1, m2 = _metrics(one), _metrics(two)
        assert m2.pop("resumed", None) == (4 if variant == "validation" else None)
        _same_metrics(m1, m2)
        assert not (two / PARTIAL_FILE).exists()
    # Rank 0 alone prints: one summary line per evaluation, one "wrote" line each.
    lines = run.stdout.splitlines()
    assert [line.rsplit(" | ", 1)[1] for line in lines] == ["checkpoint epoch_001", "baseline none", "baseline hard"]
    assert run.stderr.count("wrote ") == 3 and "(4 predictions read back from the partial file)" in run.stderr


DRIVER = """
import json, os, sys
import softprompt.evaluate as ev
from softprompt.config import load_config
from softprompt.errors import SoftPromptError
from softprompt.generation import DecodeOptions
from softprompt.parallel import process_group

sys.path.insert(0, "tests")
import conftest  # registers the extra task SOFTPROMPT_TEST_TASK names, as in the test session

sets, out = json.loads(sys.argv[1]), sys.argv[2]
cfgs = {t: load_config(conftest.smoke_config(t), sets) for t in conftest.TASK_NAMES}
rank, seen, decode = int(os.environ["RANK"]), {}, DecodeOptions(batch_size=2, max_new_tokens=6)

def attempt(name, fn):
    try:
        seen[name] = fn()
    except Exception as err:
        seen[name] = {"error": f"{type(err).__name__}: {err}"}

def fail_on_rank_1(*args, **kwargs):
    raise RuntimeError("simulated out of memory")

with process_group(cfgs["qna"]):
    qna = lambda name, prompting=ev.Prompting(): ev.evaluate(cfgs["qna"], prompting, limit=9, decode=decode,
                                                             results_dir=f"{out}/{name}", progress=False)
    attempt("missing checkpoint on rank 1",
            lambda: qna("missing", ev.Prompting(checkpoint="/nowhere" if rank else None)))
    real = ev.predict
    ev.predict = fail_on_rank_1 if rank == 1 else real
    attempt("generation fails on rank 1", lambda: qna("failing"))
    ev.predict = real
    run = str(cfgs["qna"].run_dir)
    attempt("ensemble", lambda: qna("ensemble", ev.Prompting.ensemble([run, run])))
    attempt("all", lambda: ev.evaluate_all(cfgs, limit=3, decode=decode, results_dir=f"{out}/all", progress=False))
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump(seen, f)
"""


def test_two_ranks_stop_together_on_one_ranks_error_and_match_ensembles_and_all_tasks(smoke_overrides, tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER, encoding="utf-8")
    sets = [*smoke_overrides, "train.dist_timeout_minutes=2"]  # a hang would fail within 2 minutes, not 60
    run = _torchrun(str(tmp_path / "driver.py"), json.dumps(sets), str(tmp_path / "two"))
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]

    # Rank 1 alone fails; both ranks stop with its message, and the next evaluations run on both.
    missing = [r["missing checkpoint on rank 1"]["error"] for r in ranks]
    assert missing[0] == missing[1] and missing[0].startswith("SoftPromptError: checkpoint /nowhere not found")
    failing = [r["generation fails on rank 1"]["error"] for r in ranks]
    assert failing == ["SoftPromptError: rank 1 failed with RuntimeError: simulated out of memory",
                       "RuntimeError: simulated out of memory"]  # fmt: skip
    assert not (tmp_path / "two" / "missing").exists()
    assert not list((tmp_path / "two" / "failing").rglob(METRICS_FILE))

    # The ensemble and the mixed pass over every registered task write the single process's files.
    cfgs = {t: load_config(smoke_config(t), smoke_overrides) for t in TASK_NAMES}
    run_dir = str(cfgs["qna"].run_dir)
    common = dict(decode=DECODE, results_dir=tmp_path / "one", progress=False)
    one = {
        "ensemble": evaluate(cfgs["qna"], Prompting.ensemble([run_dir, run_dir]), limit=9, **common),
        **evaluate_all(cfgs, limit=3, **common),
    }
    two = {"ensemble": ranks[0]["ensemble"], **ranks[0]["all"]}
    assert ranks[1]["ensemble"] == two["ensemble"] and ranks[1]["all"] == ranks[0]["all"]  # every rank returns them
    for name, m1 in one.items():
        m2 = two[name]
        _same_metrics(m1, m2)
        files = [Path(m["results_dir"]) / PREDICTIONS_FILE for m in (m1, m2)]
        assert files[0].read_bytes() == files[1].read_bytes() and files[0] != files[1], name
    assert list(two) == ["ensemble", *TASK_NAMES] and two["qna"]["speed"]["n"] == 3 * len(TASK_NAMES)
