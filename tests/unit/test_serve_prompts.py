"""serve.py's prompt checks before the base loads: a prompt file of a method the server cannot batch is refused
in one sentence naming the method (the checkpoint's SHA-256 record updated, so that check passes)."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import smoke_config
from softprompt.checkpoint import latest_checkpoint
from softprompt.config import load_config
from softprompt.errors import SoftPromptError
from softprompt.files import sha256
from softprompt.serving.prompts import _read_checkpoint


def _checkpoint_copy(smoke_overrides, tmp_path: Path) -> Path:
    cfg = load_config(smoke_config("sum"), smoke_overrides)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(latest_checkpoint(cfg.run_dir), ckpt)
    return ckpt


def _rewrite_meta(ckpt: Path, **changes) -> None:
    meta = json.loads((ckpt / "prompt.json").read_text()) | changes
    (ckpt / "prompt.json").write_text(json.dumps(meta))
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state["sha256"]["prompt.json"] = sha256(ckpt / "prompt.json")
    (ckpt / "trainer_state.json").write_text(json.dumps(state))


def test_a_checkpoint_is_read_with_its_recorded_config(smoke_overrides, tmp_path):
    served = _read_checkpoint("s", _checkpoint_copy(smoke_overrides, tmp_path))
    assert served.cfg.task.name == "sum" and served.prompt.shape[0] == served.cfg.model.prompt_length


def test_a_method_the_server_cannot_batch_is_refused_by_name(smoke_overrides, tmp_path):
    ckpt = _checkpoint_copy(smoke_overrides, tmp_path)
    _rewrite_meta(ckpt, method="prefix_tuning")
    with pytest.raises(SoftPromptError, match="method prefix_tuning is not served"):
        _read_checkpoint("s", ckpt)
    _rewrite_meta(ckpt, method="p_tuning")  # final vectors, like prompt tuning: served
    assert _read_checkpoint("s", ckpt).name == "s"


def test_a_prompt_of_the_wrong_length_is_refused(smoke_overrides, tmp_path):
    ckpt = _checkpoint_copy(smoke_overrides, tmp_path)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state["config"]["model"]["prompt_length"] = 5
    state["config"]["model"]["init_text"] = "a b c d e"
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(SoftPromptError, match="the prompt has 4 vectors, its config model.prompt_length 5"):
        _read_checkpoint("s", ckpt)
