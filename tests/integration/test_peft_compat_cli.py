"""scripts/export_peft.py in a subprocess writes an adapter that PEFT loads with the same logits."""

import copy

import pytest
import torch

from conftest import run_script
from softprompt.model import SoftPromptModel, init_prompt, read_prompt


@pytest.fixture()
def checkpoint(tiny, tmp_path):
    """A prompt folder as training writes it, and the model that wrote it."""
    base, tokenizer = tiny
    model = SoftPromptModel(
        copy.deepcopy(base), init_prompt(base, tokenizer, "vocab", 5, seed=7), base_id="builtin:tiny-gpt2"
    )
    model.save_prompt(tmp_path / "epoch_003", task="sum", epoch=3)
    return tmp_path / "epoch_003", model


def test_export_cli(checkpoint, tmp_path):
    ckpt, ours = checkpoint
    done = run_script("export_peft.py", str(ckpt), str(tmp_path / "cli"))
    assert done.returncode == 0, done.stderr
    assert torch.equal(read_prompt(tmp_path / "cli")[0], ours.prompt.detach())
    bad = run_script("export_peft.py", str(tmp_path / "nope"), str(tmp_path / "cli2"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
