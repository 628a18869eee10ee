"""builtin:tiny-tasks, the shipped model pretrained on the synthetic tasks: loads, is checked, is reproducible."""

import json
import shutil

import pytest
import torch

from conftest import ROOT
from softprompt import builtin
from softprompt.builtin import MANIFEST, WEIGHTS
from softprompt.config import ModelConfig
from softprompt.errors import SoftPromptError
from softprompt.files import sha256
from softprompt.hub import load_base
from softprompt.pretrain import Recipe, pretrain

FOLDER = ROOT / "models" / "tiny-tasks"


def test_loads_through_from_pretrained_and_matches_its_manifest():
    manifest = json.loads((FOLDER / MANIFEST).read_text())
    base, tokenizer = load_base(ModelConfig(name_or_path="builtin:tiny-tasks"))
    assert type(base).__name__ == "GPT2LMHeadModel" and not base.training
    assert sum(p.numel() for p in base.parameters()) == manifest["parameters"]
    assert (FOLDER / WEIGHTS).stat().st_size <= 10 * 2**20
    assert sha256(FOLDER / WEIGHTS) == manifest["sha256"][WEIGHTS]
    assert manifest["threads"] == Recipe().threads and Recipe(**manifest["recipe"]) == Recipe()


def test_a_damaged_weights_file_is_one_clear_error(tmp_path, monkeypatch):
    copy = tmp_path / "models" / "tiny-tasks"
    shutil.copytree(FOLDER, copy)
    data = bytearray((copy / WEIGHTS).read_bytes())
    data[-1] ^= 1
    (copy / WEIGHTS).write_bytes(bytes(data))
    monkeypatch.setattr(builtin, "models_dir", lambda: tmp_path / "models")
    with pytest.raises(SoftPromptError, match=r"model.safetensors does not match the SHA-256 in .*manifest.json"):
        load_base(ModelConfig(name_or_path="builtin:tiny-tasks"))


def test_the_recipe_reproduces_the_manifest_losses():
    # Same recipe, seeds and thread count: the first steps' losses are those the shipped build logged.
    manifest = json.loads((FOLDER / MANIFEST).read_text())
    threads = torch.get_num_threads()
    try:
        _, _, losses = pretrain(Recipe(**manifest["recipe"]), steps=len(manifest["first_losses"]), log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    assert losses == pytest.approx(manifest["first_losses"], rel=1e-6, abs=0)
