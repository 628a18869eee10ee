"""The suite's task-parametrised tests run on a fourth task without editing them.

A child pytest collects the suite as it is; every test that it parametrises over all the shipped tasks
(ids `[qna]`, `[sum]`, `[tx]`) must then also run, and pass, as `[reverse]` in a second child that
registers tests/fixtures/reverse/task.py through SOFTPROMPT_TEST_TASK. Three files are about the shipped
tasks themselves rather than any task, and are left out: test_config.py (configs/qna.yaml and friends),
test_synthetic.py (the synthetic world's data) and test_quality.py (the built-in model was pretrained on
those three tasks, so only they can reach its oracle).
"""

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from conftest import EXTRA_TASK, ROOT, SHARED_CACHE
from softprompt import tasks

SHIPPED = ("qna", "sum", "tx")
ABOUT_THE_SHIPPED_TASKS = ("test_config.py", "test_synthetic.py", "test_quality.py")


def pytest_child(*args, env=None, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def task_parametrised(node_ids: list[str]) -> set[str]:
    """The tests (file::name) collected with an id for every shipped task."""
    ids = defaultdict(set)
    for node in node_ids:
        if m := re.fullmatch(r"(tests/\S+\.py::\w+)\[(\w+)\]", node):
            ids[m.group(1)].add(m.group(2))
    return {
        test
        for test, seen in ids.items()
        if set(SHIPPED) <= seen and not test.split("::")[0].endswith(ABOUT_THE_SHIPPED_TASKS)
    }


def test_every_task_parametrised_test_runs_and_passes_on_a_fourth_task(tmp_path):
    assert tuple(tasks.TASKS)[:3] == SHIPPED and "reverse" not in tasks.TASKS  # this session has only the shipped ones
    collected = pytest_child("--collect-only", "tests")  # one node id a line (pyproject sets -q)
    assert collected.returncode == 0, collected.stdout[-2000:]
    expected = task_parametrised(collected.stdout.splitlines())
    assert len(expected) >= 2, expected  # at least training's and evaluation's end-to-end tests

    report = tmp_path / "junit.xml"
    cache = str(Path(os.environ["SOFTPROMPT_CACHE"]).parent)  # this session's caches: the built-in model is built once
    env = {EXTRA_TASK: "tests/fixtures/reverse/task.py", SHARED_CACHE: cache}
    child = pytest_child("tests", "-k", "reverse", f"--junitxml={report}", env=env)
    assert child.returncode == 0, child.stdout[-4000:]

    cases = ET.parse(report).getroot().iter("testcase")
    passed = {
        f"{c.get('classname').replace('.', '/')}.py::{c.get('name')}"
        for c in cases
        if not any(c.find(kind) is not None for kind in ("failure", "error", "skipped"))
    }
    missing = {test for test in expected if f"{test}[reverse]" not in passed}
    assert not missing, f"task-parametrised tests that did not run on the fourth task: {sorted(missing)}"
