"""Shared fixtures. Everything runs offline: no Hub access, caches in a temporary folder.

Two tiers, by folder: tests/unit/ (in process, fast: the quick tier, `pytest tests/unit`) and
tests/integration/ (subprocesses, torchrun, kills and resumes, quality, the benchmark). Every test under
tests/integration/ gets the `slow` marker here, so `-m "not slow"` selects the same tests as tests/unit/.

The tasks under test are the registry's (softprompt.tasks.TASKS), plus one more when
SOFTPROMPT_TEST_TASK names a Python file defining `TASK` and `SMOKE_CONFIG` (tests/fixtures/reverse/task.py
is one): it is registered here, before any test module is imported, so every test parametrised over
TASK_NAMES runs on it. Tests find a task's smoke config with `smoke_config(task)`.
"""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

# Before anything imports huggingface_hub or datasets: they read these once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import yaml  # noqa: E402

import extra_task  # noqa: E402
from softprompt import tasks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXTRA_TASK = extra_task.VARIABLE
SHARED_CACHE = "SOFTPROMPT_TEST_CACHE"
"""A test session that starts another (tests/unit/test_new_task.py) passes its cache folder on in this, so the
built-in model is not built twice."""


def _register_extra_task() -> dict[str, Path]:
    """{task name: smoke config} of the task SOFTPROMPT_TEST_TASK defines (put into the registry), or {}."""
    path = os.environ.get(EXTRA_TASK)
    if not path:
        return {}
    module = extra_task.register(path)
    return {module.TASK.name: Path(module.SMOKE_CONFIG)}


def _smoke_configs() -> dict[str, Path]:
    """{task name: smoke config}: tests/configs/smoke/*.yaml by their `task:` key, and the extra task's."""
    found = {
        yaml.safe_load(p.read_text(encoding="utf-8"))["task"]: p for p in (ROOT / "tests/configs/smoke").glob("*.yaml")
    }
    return {**found, **_register_extra_task()}


SMOKE_CONFIGS = _smoke_configs()
TASK_NAMES = tuple(tasks.TASKS)
"""Every registered task, the extra one included: what task-parametrised tests run over."""


def smoke_config(task: str) -> Path:
    """The smoke config of a registered task (a short training on builtin:tiny-gpt2 and small local files)."""
    return SMOKE_CONFIGS[task]


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    """The built-in model and datasets' map cache live in a per-session temporary folder."""
    cache = Path(os.environ[SHARED_CACHE]) if os.environ.get(SHARED_CACHE) else tmp_path_factory.mktemp("cache")
    os.environ["SOFTPROMPT_CACHE"] = str(cache / "softprompt")
    os.environ["HF_DATASETS_CACHE"] = str(cache / "datasets")
    RESULTS[0] = cache / "results"
    yield


RESULTS = [ROOT / "results"]  # replaced by a temporary folder for the session


@pytest.fixture(scope="session")
def tiny():
    """(base model, tokenizer) of builtin:tiny-gpt2, loaded once per session."""
    from softprompt.config import ModelConfig
    from softprompt.hub import load_base

    return load_base(ModelConfig(name_or_path="builtin:tiny-gpt2"))


@pytest.fixture(scope="session")
def smoke_overrides(tmp_path_factory):
    """--set overrides pointing each task's smoke config at one short training of it
    (1 epoch on 8 examples), trained once per session and shared by the evaluation tests; tests that
    damage a checkpoint copy it first."""
    from softprompt.config import load_config
    from softprompt.train import train

    out = tmp_path_factory.mktemp("smoke-ckpt")
    sets = [f"train.output_dir={out}", "train.epochs=1", "data.max_train_examples=8"]
    for task in TASK_NAMES:
        train(
            load_config(smoke_config(task), sets),
            quiet=True,
            echo=lambda line: None,
            results_dir=None,
        )
    return sets


QNA_RECORD = {
    "context": "The Velmora River rises in the Kestrel Hills.",
    "question": "Where does it rise?",
    "answers": {"text": ["the Kestrel Hills"], "answer_start": [27]},
}
"""One valid SQuAD-shaped record, for tests that write data files."""


def write(path: Path, text: str) -> Path:
    """Write text (UTF-8) to path, making its folder; returns path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, *records) -> Path:
    """A JSON Lines file of records (dicts are dumped, strings written as they are, for malformed lines)."""
    return write(path, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def quotient_of_rounded(value: float, top: float, bottom: float, places: int = 3) -> bool:
    """Whether `value` (rounded to `places`) can be top / bottom, when top and bottom were rounded to `places` too
    (a rate from a few milliseconds can be 2% off the quotient of its rounded parts)."""
    half = 0.5 * 10**-places
    low, high = (top - half) / (bottom + half), (top + half) / max(bottom - half, 1e-12)
    return low - half <= value <= high + half


def run_script(script: str, *args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 300, nproc: int = 1):
    """Run scripts/<script> in a subprocess; returns CompletedProcess with text output.

    Scripts that write results get a temporary --results-dir unless one is given,
    so tests never write into the repository's results/. nproc > 1: under torchrun with that many
    processes (one thread each), its rendezvous on a free port.
    """
    full_env = {**os.environ, **(env or {})}
    if script in ("train.py", "evaluate.py") and "--results-dir" not in args:
        args = (*args, "--results-dir", str(RESULTS[0]))
    launcher = []
    if nproc > 1:
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port())]
        full_env.setdefault("OMP_NUM_THREADS", "1")
    # With an extra task, the script starts through tests/extra_task.py, which registers it first.
    through = [str(ROOT / "tests" / "extra_task.py")] if full_env.get(EXTRA_TASK) else []
    return subprocess.run(
        [sys.executable, *launcher, *through, str(ROOT / "scripts" / script), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_until_killed(args: list[str], pattern: str, env: dict | None = None, timeout: int = 60) -> str:
    """Start scripts/train.py with `args`, SIGKILL it once an output line matches `pattern`; returns the output so
    far (the run must still be going at that point)."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if re.search(pattern, line):
            proc.send_signal(signal.SIGKILL)
            break
    proc.stdout.close()
    assert proc.wait(timeout=timeout) == -signal.SIGKILL, "the run ended before the kill point:\n" + "".join(seen)
    return "".join(seen)


def free_port() -> int:
    """A TCP port nothing listens on now, for a torchrun or init_process_group rendezvous (never a fixed one)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script_cli(script: str):
    """scripts/<script>'s main, run in process: the returned function takes its arguments, returns its exit status."""
    from softprompt.cli import run_cli

    spec = importlib.util.spec_from_file_location(Path(script).stem + "_script", ROOT / "scripts" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda *argv: run_cli(module.main, list(argv))


@pytest.fixture(scope="module")
def evaluate_script():
    """scripts/evaluate.py's main, run in process: evaluate_script("--config", ...) returns its exit status."""
    return script_cli("evaluate.py")


def pytest_collection_modifyitems(config, items):
    """The folder is the tier: tests under tests/integration/ are marked slow."""
    integration = ROOT / "tests" / "integration"
    for item in items:
        if integration in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)
