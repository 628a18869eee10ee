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


@pytest.mark.parametrize("size", sorted(builtin.SIZES))
def test_the_recipe_reproduces_the_manifest_losses(size):
    # Same recipe, seeds and thread count: the first steps' losses are those the shipped build logged.
    folder = ROOT / "models" / builtin.FAMILY[size]
    if not (folder / MANIFEST).is_file():
        pytest.skip(f"{folder} is not built yet (scripts/build_builtin.py --size {size})")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert Recipe(**manifest["recipe"]) == Recipe.for_size(size)
    threads = torch.get_num_threads()
    try:
        _, _, losses = pretrain(Recipe(**manifest["recipe"]), steps=len(manifest["first_losses"]), log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    assert losses == pytest.approx(manifest["first_losses"], rel=1e-6, abs=0)


def test_a_pretraining_state_of_another_recipe_is_refused(tmp_path):
    recipe = Recipe(n_layer=2, n_embd=32, steps=2, batch_size=2, warmup_steps=1)
    pretrain(recipe, log=lambda m: None, state_dir=tmp_path / "state", save_every=2)
    with pytest.raises(SoftPromptError, match=r"state.json was saved by another recipe \(differs in n_embd\)"):
        pretrain(Recipe(n_layer=2, n_embd=16, steps=2, batch_size=2, warmup_steps=1), state_dir=tmp_path / "state")


def test_the_family_names_its_sizes_and_says_how_to_build_a_missing_one(tmp_path, monkeypatch):
    assert builtin.builtin_path("builtin:tiny-tasks-1m") == builtin.builtin_path("builtin:tiny-tasks")
    with pytest.raises(SoftPromptError, match=r"unknown built-in model; built-ins are .*builtin:tiny-tasks-300k"):
        builtin.builtin_path("builtin:tiny-tasks-7m")
    monkeypatch.setattr(builtin, "models_dir", lambda: tmp_path)
    with pytest.raises(SoftPromptError, match=r"tiny-tasks-5m is not built: .*build_builtin.py --size 5m"):
        builtin.builtin_path("builtin:tiny-tasks-5m")
