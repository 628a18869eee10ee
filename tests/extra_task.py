"""The extra task a test session may add (SOFTPROMPT_TEST_TASK), also for the scripts tests start.

`register(path)` puts the `TASK` of a Python file into softprompt.tasks.TASKS. A script run in a subprocess
is a fresh interpreter that has only the shipped tasks, so conftest.run_script starts scripts through this
file when the variable is set:

    python tests/extra_task.py scripts/train.py --config tests/fixtures/reverse/smoke.yaml
"""

import importlib.util
import os
import runpy
import sys
from pathlib import Path

from softprompt import tasks

ROOT = Path(__file__).resolve().parents[1]
VARIABLE = "SOFTPROMPT_TEST_TASK"


def register(path: str):
    """Import the task file at path (relative to the repository) and register its TASK; returns the module."""
    spec = importlib.util.spec_from_file_location("extra_task_definition", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tasks.TASKS[module.TASK.name] = module.TASK
    return module


if __name__ == "__main__":
    register(os.environ[VARIABLE])
    script, sys.argv = sys.argv[1], sys.argv[1:]
    sys.path.insert(0, str(Path(script).resolve().parent))  # as `python script` would
    runpy.run_path(script, run_name="__main__")
