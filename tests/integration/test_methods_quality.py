"""p_tuning and prefix_tuning must learn too: on builtin:tiny-tasks each beats both baselines by the margins of
tests/integration/test_quality.py, on all three tasks.

Each (method, task) trains the smoke config with only `--set prompt.method=...` and a shorter run (the first
640 training examples, one epoch: 40 optimizer steps, where prompt tuning's smoke run takes 375), then
evaluate() scores a seeded sample of the test split. The baselines do not depend on the method (no prompt at
all, or the init words as text), so they are scored once per task.
"""

import pytest

from softprompt.config import load_config
from softprompt.evaluate import Prompting, evaluate
from softprompt.tasks import get_task
from softprompt.train import train

TASKS = ("qna", "sum", "tx")
METHODS = ("p_tuning", "prefix_tuning")
SHORT = ["model.init=text", "data.max_train_examples=640", "train.epochs=1", "train.save_every=1"]
LIMIT = 50
MARGIN = 80  # as tests/integration/test_quality.py asks of prompt tuning: points above the better baseline


def score(metrics):
    return metrics["scores"][get_task(metrics["task"]).headline[0]]


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines")
    result = {}
    for task in TASKS:
        cfg = load_config(f"configs/smoke/{task}.yaml", SHORT)
        result[task] = {
            b: score(evaluate(cfg, Prompting.baseline(b), limit=LIMIT, results_dir=out, progress=False))
            for b in ("none", "hard")
        }
    return result


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("method", METHODS)
def test_each_method_beats_both_baselines_by_a_wide_margin(method, task, baselines, tmp_path):
    sets = [*SHORT, f"prompt.method={method}", f"train.output_dir={tmp_path}"]
    cfg = load_config(f"configs/smoke/{task}.yaml", sets)
    train(cfg, quiet=True, echo=lambda line: None, results_dir=None)
    plain = load_config(f"configs/smoke/{task}.yaml", [*SHORT, f"train.output_dir={tmp_path}"])  # no method set:
    metrics = evaluate(plain, limit=LIMIT, results_dir=tmp_path / "results", progress=False)  # the file says it
    tuned, base = score(metrics), baselines[task]
    assert all(b <= tuned / 2 for b in base.values()), (method, task, tuned, base)
    assert tuned - max(base.values()) >= MARGIN, (method, task, tuned, base)
