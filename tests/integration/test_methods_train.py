"""p_tuning and prefix_tuning through the training loop: kill -9 mid-epoch, --resume, the same prompt bytes.

The run is tests/configs/smoke/qna.yaml shrunk to 4 epochs of 6 micro-batches (as test_reliability.py's), with a
mid-epoch checkpoint every 2 optimizer steps. The reference trains uninterrupted in this process; the other run
is a scripts/train.py subprocess killed with SIGKILL in epoch 2, then resumed; its final prompt.safetensors
(and the encoder weights in trainer_state.safetensors) must equal the reference's byte for byte. Then the
checkpoint is evaluated (scripts/evaluate.py, and --baseline), and resumed under the wrong method.
"""

import json
import re

import pytest
from safetensors.torch import load_file

from conftest import ROOT, run_script, train_until_killed
from softprompt.config import load_config
from softprompt.errors import SoftPromptError
from softprompt.train import train as train_in_process

CONFIG = ROOT / "tests" / "configs" / "smoke" / "qna.yaml"
RUN = "smoke-qna"
SETS = [
    "train.epochs=4",
    "train.save_every=1",
    "train.log_every=2",
    "train.save_every_steps=2",
    "train.lr=0.01",
    "data.max_train_examples=12",
    "data.max_eval_examples=4",
    "data.max_source_tokens=64",
]
METHODS = {
    "p_tuning-lstm": ["prompt.method=p_tuning", "prompt.encoder=lstm", "prompt.encoder_hidden_size=16"],
    "prefix_tuning": ["prompt.method=prefix_tuning"],
    "prefix_tuning-projection": ["prompt.method=prefix_tuning", "prompt.prefix_projection=true"],
}


def args(out, sets):
    flat = [a for s in [*SETS, *sets, f"train.output_dir={out}"] for a in ("--set", s)]
    return ["--config", str(CONFIG), "--quiet", *flat, "--results-dir", str(out / "results")]


def train_here(out, sets, resume=False):
    cfg = load_config(CONFIG, [*SETS, *sets, f"train.output_dir={out}"])
    return train_in_process(cfg, resume=resume, quiet=True, echo=lambda line: None, results_dir=None)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_kill_mid_epoch_then_resume_gives_the_same_prompt_bytes(method, tmp_path):
    sets = METHODS[method]
    reference = train_here(tmp_path / "reference", sets) / "epoch_004"
    out = tmp_path / "killed"
    # Killed in mid-epoch 2: its step-2 checkpoint is the newest.
    train_until_killed(args(out, sets), r"^Epoch: 1 \| Step: 4 \|", timeout=120)
    done = run_script("train.py", *args(out, sets), "--resume")
    assert done.returncode == 0, done.stderr
    assert "Resuming from" in done.stdout
    resumed = out / RUN / "epoch_004"
    assert (resumed / "prompt.safetensors").read_bytes() == (reference / "prompt.safetensors").read_bytes()
    ours, theirs = (
        load_file(str(resumed / "trainer_state.safetensors")),
        load_file(str(reference / "trainer_state.safetensors")),
    )
    assert any(k.startswith("trainable.") for k in ours)  # the encoder's weights, what resume continues from
    assert ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) for k in ours)
    meta = json.loads((resumed / "prompt.json").read_text())
    assert meta["method"] == sets[0].split("=")[1]

    # Evaluation reads the method from the prompt file: the config needs no --set to score it.
    plain = ["--set", f"train.output_dir={out}", "--set", "data.max_source_tokens=64"]
    for extra in ([], ["--baseline", "none"]):
        ev = run_script("evaluate.py", "--config", str(CONFIG), *plain, "--limit", "4", *extra)
        assert ev.returncode == 0, ev.stderr
        assert re.search(r"qna \| validation \| n=4 \| EM", ev.stdout), ev.stdout


@pytest.mark.slow
def test_a_prefix_checkpoint_resumed_as_p_tuning_is_refused_in_one_line(tmp_path):
    train_here(tmp_path, ["prompt.method=prefix_tuning", "train.epochs=1"])
    with pytest.raises(SoftPromptError, match="holds a prefix_tuning prompt but this run's prompt.method is p_tuning"):
        train_here(tmp_path, ["prompt.method=p_tuning", "train.epochs=2"], resume=True)
    done = run_script("train.py", *args(tmp_path, ["prompt.method=p_tuning", "train.epochs=2"]), "--resume")
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "prefix_tuning prompt but this run's prompt.method is p_tuning" in errors[0]
