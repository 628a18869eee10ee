"""Evaluation that survives an interruption (predictions.partial.jsonl, --resume) and a full disk.

The session's smoke qna training (conftest.py) makes the checkpoint; its validation split has 10 examples.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ROOT
from softprompt import results as results_module
from softprompt.config import load_config
from softprompt.errors import SoftPromptError
from softprompt.evaluate import Prompting, evaluate, summary_line
from softprompt.generation import DecodeOptions
from softprompt.results import METRICS_FILE, PARTIAL_FILE, PREDICTIONS_FILE, PartialPredictions

CONFIG = "tests/configs/smoke/qna.yaml"
DECODE = DecodeOptions(batch_size=2, max_new_tokens=6)  # 10 examples: 5 batches


def _cfg(overrides, *more):
    return load_config(CONFIG, [*overrides, *more])


def _rows(out):
    return [json.loads(line) for line in (out / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()]


def _interrupt_after(monkeypatch, batches):
    """Make the partial file's writer stop the run (as a kill would) once it has written `batches` batches."""
    real, calls = PartialPredictions.append, []

    def append(self, indices, predictions):
        if len(calls) == batches:
            raise KeyboardInterrupt
        calls.append(list(indices))
        real(self, indices, predictions)

    monkeypatch.setattr(PartialPredictions, "append", append)
    return calls


@pytest.fixture
def reference(smoke_overrides, tmp_path):
    """An uninterrupted evaluation: (metrics, predictions.jsonl rows)."""
    metrics = evaluate(_cfg(smoke_overrides), decode=DECODE, results_dir=tmp_path / "ref", progress=False)
    return metrics, _rows(tmp_path / "ref" / "smoke-qna" / "validation")


def test_an_interrupted_evaluation_resumes_to_the_uninterrupted_result(smoke_overrides, reference, tmp_path):
    ref_metrics, ref_rows = reference
    out = tmp_path / "smoke-qna" / "validation"
    with pytest.MonkeyPatch.context() as mp:
        _interrupt_after(mp, 2)
        with pytest.raises(KeyboardInterrupt):
            evaluate(_cfg(smoke_overrides), decode=DECODE, results_dir=tmp_path, progress=False)
    lines = (out / PARTIAL_FILE).read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert len(lines) == 1 + 4 and not (out / METRICS_FILE).exists() and not (out / PREDICTIONS_FILE).exists()
    assert header["checkpoint_sha256"] and len(header["checkpoint_sha256"]) == 64 and header["baseline"] is None
    assert header["split"] == "validation" and header["limit"] is None and header["n"] == 10
    assert header["decoding"]["batch_size"] == 2 and header["decoding"]["max_new_tokens"] == 6
    with (out / PARTIAL_FILE).open("a", encoding="utf-8") as f:
        f.write('{"index": 3, "predic')  # a line torn by the kill: dropped, that row generated again

    # Without --resume the interrupted run is not thrown away silently.
    with pytest.raises(SoftPromptError, match=r"holds 4 predictions of an interrupted evaluation: add --resume"):
        evaluate(_cfg(smoke_overrides), decode=DECODE, results_dir=tmp_path, progress=False)
    with pytest.MonkeyPatch.context() as mp:
        calls = _interrupt_after(mp, 99)
        resumed = evaluate(_cfg(smoke_overrides), decode=DECODE, results_dir=tmp_path, resume=True, progress=False)
    assert len(calls) == 3  # only the 3 batches not done were generated
    assert resumed["resumed"] == 4 and resumed["scores"] == ref_metrics["scores"]
    assert _rows(out) == ref_rows and any(r["prediction"] for r in ref_rows)
    assert summary_line(resumed) == summary_line(ref_metrics)
    assert not (out / PARTIAL_FILE).exists()  # done: the partial file became predictions.jsonl


def test_resume_refuses_other_decoding_or_another_checkpoint_naming_the_field(smoke_overrides, tmp_path):
    cfg = _cfg(smoke_overrides)
    with pytest.MonkeyPatch.context() as mp:
        _interrupt_after(mp, 1)
        with pytest.raises(KeyboardInterrupt):
            evaluate(cfg, decode=DECODE, results_dir=tmp_path, progress=False)
    partial = tmp_path / "smoke-qna" / "validation" / PARTIAL_FILE
    before = partial.read_bytes()
    other = DecodeOptions(batch_size=3, max_new_tokens=6)
    with pytest.raises(SoftPromptError, match=r"cannot resume from .*: decoding\.batch_size is 2 in the file, 3 in"):
        evaluate(cfg, decode=other, results_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(SoftPromptError, match=r": limit is null in the file, 5 in this run"):
        evaluate(cfg, decode=DECODE, limit=5, results_dir=tmp_path, resume=True, progress=False)

    # A checkpoint whose prompt differs by one value (no trainer state: nothing else checks its hash).
    ckpt = shutil.copytree(cfg.run_dir / "epoch_001", tmp_path / "other", ignore=shutil.ignore_patterns("trainer*"))
    prompt = load_file(ckpt / "prompt.safetensors")["prompt"]
    save_file({"prompt": prompt + torch.eye(*prompt.shape) * 1e-3}, str(ckpt / "prompt.safetensors"))
    with pytest.raises(SoftPromptError, match=r": checkpoint_sha256 is \"[0-9a-f]{64}\" in the file, \"[0-9a-f]{64}\""):
        evaluate(cfg, Prompting(checkpoint=ckpt), decode=DECODE, results_dir=tmp_path, resume=True, progress=False)
    hard = tmp_path / "x" / "smoke-qna" / "validation-baseline-hard"
    hard.mkdir(parents=True)
    shutil.copy(partial, hard / PARTIAL_FILE)
    with pytest.raises(SoftPromptError, match=r": baseline is null in the file, \"hard\" in this run"):
        evaluate(
            cfg, Prompting.baseline("hard"), decode=DECODE, results_dir=tmp_path / "x", resume=True, progress=False
        )
    assert partial.read_bytes() == before  # a refused resume leaves the partial file as it was


class _FullDisk:
    """`open` for results.py: writes to files named `name` opened in one of `modes` fail with ENOSPC after 5 bytes."""

    def __init__(self, name, modes="wa"):
        self.name, self.modes = name, modes

    def __call__(self, path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        if str(path).endswith(self.name) and any(m in mode for m in self.modes):
            real = f.write

            def write(text):
                real(text[:5])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            f.write = write
        return f


@pytest.fixture(scope="module")
def script(evaluate_script):
    return evaluate_script


@pytest.mark.parametrize("failing", [METRICS_FILE + ".tmp", PREDICTIONS_FILE + ".tmp"])
def test_a_full_disk_while_writing_results_keeps_the_previous_ones(smoke_overrides, script, tmp_path, failing, capsys):
    cfg = _cfg(smoke_overrides)
    evaluate(cfg, decode=DECODE, limit=4, results_dir=tmp_path, progress=False)
    out = tmp_path / "smoke-qna" / "validation"
    before = {name: (out / name).read_bytes() for name in (METRICS_FILE, PREDICTIONS_FILE)}
    sets = [a for o in smoke_overrides for a in ("--set", o)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(results_module, "open", _FullDisk(failing), raising=False)
        argv = ["--config", CONFIG, *sets, "--batch-size", "2", "--max-new-tokens", "6", "--results-dir", str(tmp_path)]
        assert script(*argv, "--quiet") == 2
    err = capsys.readouterr().err  # besides the error, only transformers' weight-loading bar
    assert "Traceback" not in err and "wrote " not in err
    assert [x for x in err.splitlines() if x.strip() and not x.startswith("Loading weights")] == [
        f"error: cannot write results to {out} (No space left on device); the results there before are unchanged"
    ]
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in out.iterdir()) == sorted([*before, PARTIAL_FILE])  # no temporary file left
    # The predictions were all generated and kept: with room again, --resume writes the results from them.
    metrics = evaluate(cfg, decode=DECODE, results_dir=tmp_path, resume=True, progress=False)
    assert metrics["n"] == 10 and metrics["resumed"] == 10 and len(_rows(out)) == 10


def test_a_full_disk_while_streaming_predictions_is_one_error_and_resumable(smoke_overrides, reference, tmp_path):
    cfg = _cfg(smoke_overrides)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(results_module, "open", _FullDisk(PARTIAL_FILE, modes="a"), raising=False)  # header written
        with pytest.raises(
            SoftPromptError, match=r"cannot write predictions to .*predictions\.partial\.jsonl \(No space"
        ):
            evaluate(cfg, decode=DECODE, results_dir=tmp_path, progress=False)
    metrics = evaluate(cfg, decode=DECODE, results_dir=tmp_path, resume=True, progress=False)
    assert metrics["scores"] == reference[0]["scores"] and _rows(tmp_path / "smoke-qna" / "validation") == reference[1]


def test_kill_9_in_the_middle_then_resume_equals_an_uninterrupted_run(smoke_overrides, tmp_path):
    # 300 validation examples (the 10 samples repeated), one per batch, so the kill lands mid-run.
    records = (ROOT / "data/samples/qna/validation.jsonl").read_text(encoding="utf-8").splitlines() * 30
    (tmp_path / "validation.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    files = {"train": str(ROOT / "data/samples/qna/train.jsonl"), "validation": str(tmp_path / "validation.jsonl")}
    sets = [*smoke_overrides, f"data.files={json.dumps(files)}"]
    argv = [
        sys.executable,
        str(ROOT / "scripts/evaluate.py"),
        "--config",
        CONFIG,
        *(x for s in sets for x in ("--set", s)),
    ]
    argv += ["--batch-size", "1", "--max-new-tokens", "6", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = subprocess.run([*argv, "--results-dir", str(tmp_path / "full")], env=env, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr

    proc = subprocess.Popen([*argv, "--results-dir", str(tmp_path)], env=env, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / "smoke-qna" / "validation" / PARTIAL_FILE
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.is_file() and partial.read_text(encoding="utf-8").count("\n") > 20:
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read()  # still running: the kill interrupts it
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = partial.read_text(encoding="utf-8").count("\n") - 1
    assert 20 <= done < 300 and not (partial.parent / METRICS_FILE).exists()

    again = subprocess.run([*argv, "--results-dir", str(tmp_path), "--resume"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout == full.stdout and again.stdout.startswith("qna | validation | n=300 | EM ")
    assert _rows(partial.parent) == _rows(tmp_path / "full" / "smoke-qna" / "validation")
    resumed = json.loads((partial.parent / METRICS_FILE).read_text(encoding="utf-8"))
    assert resumed["resumed"] >= done and not partial.exists()


def test_the_partial_file_on_its_own(tmp_path):
    first = PartialPredictions(tmp_path, {"a": 1}, resume=False)
    assert first.done == {} and json.loads((tmp_path / PARTIAL_FILE).read_text()) == {"format": 1, "a": 1}
    again = PartialPredictions(tmp_path, {"a": 2}, resume=False)  # no finished batch in it: nothing to lose
    assert again.done == {} and json.loads((tmp_path / PARTIAL_FILE).read_text())["a"] == 2
    again.append([3, 1], ["x", ""])
    with pytest.raises(SoftPromptError, match="holds 2 predictions of an interrupted evaluation: add --resume"):
        PartialPredictions(tmp_path, {"a": 2}, resume=False)
    assert PartialPredictions(tmp_path, {"a": 2}, resume=True).done == {3: "x", 1: ""}
    with pytest.raises(SoftPromptError, match=r"cannot resume from .*: a is 2 in the file, 3 in this run; delete it"):
        PartialPredictions(tmp_path, {"a": 3}, resume=True)
    lines = (tmp_path / PARTIAL_FILE).read_text().splitlines()
    (tmp_path / PARTIAL_FILE).write_text("\n".join([lines[0], "garbage", lines[1]]) + "\n")
    with pytest.raises(SoftPromptError, match=r"line 2 is not a prediction; delete it to start over"):
        PartialPredictions(tmp_path, {"a": 2}, resume=True)
    (tmp_path / PARTIAL_FILE).write_text('{"not": "a header"}\n{"index": 0, "prediction": ""}\n')
    with pytest.raises(SoftPromptError, match=r"is not a partial predictions file; delete it to start over"):
        PartialPredictions(tmp_path, {"a": 2}, resume=True)
