"""The command line's bad inputs: scripts/train.py and scripts/evaluate.py in subprocesses (a few at a time)
exit 2 with one `error:` line and no traceback, and leave an earlier run's checkpoints, log and results byte
for byte as they were; --debug shows the traceback.
"""

import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import QNA_RECORD, ROOT, jsonl, write
from softprompt.checkpoint import save_checkpoint
from softprompt.model import SoftPromptModel

SMOKE = "tests/configs/smoke/qna.yaml"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cli(tmp_path_factory, tiny):
    """{case: (CompletedProcess, earlier-run folder, its snapshot before)} for the cases below, run concurrently."""
    tmp = tmp_path_factory.mktemp("cli")
    # An earlier run that the cases point at (with --resume or --overwrite, so nothing but the bad input stops
    # them); each case gets its own copy, as two runs never share a run folder.
    base, _ = tiny
    model = SoftPromptModel(base, torch.randn(4, base.config.n_embd), base_id="builtin:tiny-gpt2")
    run_dir = tmp / "earlier" / "ckpt" / "smoke-qna"
    save_checkpoint(run_dir, 3, 60, model, torch.optim.AdamW([model.prompt]), {}, {"task": "qna"})
    write(run_dir / "log.jsonl", '{"type": "epoch", "epoch": 3, "train_loss": 1.0, "val_loss": 2.0}\n')
    write(tmp / "earlier" / "results" / "smoke-qna" / "validation" / "metrics.json", "{}\n")

    bad_yaml = write(tmp / "configs" / "bad.yaml", "task: qna\ntrain:\n  lr: [0.1\n  epochs: 3\n")
    not_a_dir = write(tmp / "a_file", "")
    malformed = jsonl(tmp / "malformed.jsonl", QNA_RECORD, QNA_RECORD, '{"context": "x", "question": ')
    valid = jsonl(tmp / "valid.jsonl", QNA_RECORD, QNA_RECORD)
    copies = iter(range(100))

    def keep():
        folder = tmp / f"earlier-{next(copies)}"
        shutil.copytree(tmp / "earlier", folder)
        return ["--set", f"train.output_dir={folder / 'ckpt'}", "--results-dir", str(folder / "results")]

    cases = {
        "yaml syntax error": (
            ["train.py", "--config", str(bad_yaml), *keep(), "--resume"],
            r"bad\.yaml: YAML syntax error at line 4, column 9: expected ',' or '\]'",
        ),
        "--set without =": (
            ["train.py", "--config", SMOKE, "--set", "train.lr", *keep(), "--resume"],
            r"--set 'train.lr': expected key=value",
        ),
        "unwritable output dir": (
            ["train.py", "--config", SMOKE, "--set", f"train.output_dir={not_a_dir}/out"],
            rf"cannot write to the run directory {re.escape(str(not_a_dir))}/out/smoke-qna",
        ),
        "missing data file (--overwrite)": (
            [
                "train.py",
                "--config",
                SMOKE,
                *keep(),
                "--overwrite",
                "--set",
                f"data.files={{train: {tmp}/nope.jsonl, validation: {valid}}}",
            ],
            rf"data file not found: {re.escape(str(tmp))}/nope\.jsonl",
        ),
        "malformed JSON line": (
            [
                "train.py",
                "--config",
                SMOKE,
                *keep(),
                "--resume",
                "--set",
                f"data.files={{train: {malformed}, validation: {valid}}}",
            ],
            r"malformed\.jsonl, line 3: not valid JSON",
        ),
        "Hub model id offline": (
            ["train.py", "--config", SMOKE, *keep(), "--resume", "--set", "model.name_or_path=some-org/some-model"],
            r"could not load model 'some-org/some-model' .*builtin:tiny-gpt2",
        ),
        "evaluate without a checkpoint": (
            [
                "evaluate.py",
                "--config",
                SMOKE,
                "--set",
                f"train.output_dir={tmp / 'empty'}",
                "--results-dir",
                str(tmp / "results"),
            ],
            r"no checkpoint in .*empty/smoke-qna; train one first",
        ),
        "--debug": (["train.py", "--config", SMOKE, "--set", "train.lr", "--debug"], None),
    }
    before = snapshot(tmp)

    def run(argv):
        return subprocess.run(
            [sys.executable, str(ROOT / "scripts" / argv[0]), *argv[1:]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        procs = dict(zip(cases, pool.map(run, [argv for argv, _ in cases.values()]), strict=False))
    return {name: (procs[name], pattern) for name, (_, pattern) in cases.items()}, tmp, before


CLI_CASES = [
    "yaml syntax error",
    "--set without =",
    "unwritable output dir",
    "missing data file (--overwrite)",
    "malformed JSON line",
    "Hub model id offline",
    "evaluate without a checkpoint",
]


@pytest.mark.parametrize("case", CLI_CASES)
def test_command_line_bad_input_is_one_error_line_exit_2_no_traceback(cli, case):
    results, _, _ = cli
    proc, pattern = results[case]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    assert re.search(pattern, errors[0]), errors[0]


def test_command_line_bad_inputs_leave_earlier_runs_and_results_untouched(cli):
    _, tmp, before = cli
    assert snapshot(tmp) == before
    earlier = [p for p in before if p.startswith("earlier-") and p.endswith("epoch_003/prompt.safetensors")]
    assert len(earlier) == 5  # every case that points at an earlier run


def test_debug_shows_the_traceback(cli):
    results, _, _ = cli
    proc, _ = results["--debug"]
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError: --set 'train.lr'" in proc.stderr
