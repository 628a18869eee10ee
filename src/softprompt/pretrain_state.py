"""Pretraining's resume state: one folder, replaced atomically every few hundred steps.

    <state_dir>/weights.safetensors    the model's weights and the AdamW moments (optim.*)
    <state_dir>/state.json             recipe, losses so far, seconds so far, the mixture's RNG state, SHA-256

What is saved is everything the next step reads, so a resumed build equals an uninterrupted one byte for byte
(same recipe and thread count). The mixture draws from Python's `random`, whose state is a tuple of ints
(JSON); no dropout, so torch's RNG is not read after the model's initialisation.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from .errors import SoftPromptError
from .files import fsync, sha256
from .optim_state import PREFIX, load_optimizer_tensors, optimizer_tensors

WEIGHTS = "weights.safetensors"
META = "state.json"


def _old(state_dir: Path) -> Path:
    return state_dir.with_name(f".{state_dir.name}.old")


def saved(state_dir: Path) -> bool:
    """Whether a state was saved there (or was being replaced when the process died)."""
    return (Path(state_dir) / META).is_file() or (_old(Path(state_dir)) / META).is_file()


def save(state_dir: Path, recipe, model, optimizer, rng: random.Random, losses: list[float], seconds: float) -> None:
    """Write the state beside state_dir, flush it, then swap it in (a kill at any moment leaves one whole state)."""
    state_dir = Path(state_dir)
    tmp = state_dir.with_name(f".{state_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors, groups = optimizer_tensors(optimizer)
    tensors |= {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS))
    version, internal, gauss = rng.getstate()
    meta = {
        "recipe": asdict(recipe),
        "losses": losses,
        "seconds": round(seconds, 1),
        "param_groups": groups,
        "mixture_rng": [version, list(internal), gauss],
        "sha256": sha256(tmp / WEIGHTS),
    }
    (tmp / META).write_text(json.dumps(meta) + "\n", encoding="utf-8")
    for f in tmp.iterdir():
        fsync(f)
    old = _old(state_dir)
    if state_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(state_dir, old)
    os.rename(tmp, state_dir)
    shutil.rmtree(old, ignore_errors=True)


def load(state_dir: Path, recipe, model, optimizer, rng: random.Random) -> tuple[list[float], float]:
    """Restore a saved state into model, optimizer and rng; returns (losses so far, seconds so far)."""
    folder = Path(state_dir) if (Path(state_dir) / META).is_file() else _old(Path(state_dir))
    meta: dict[str, Any] = json.loads((folder / META).read_text(encoding="utf-8"))
    if meta["recipe"] != json.loads(json.dumps(asdict(recipe))):
        changed = sorted(k for k, v in json.loads(json.dumps(asdict(recipe))).items() if meta["recipe"].get(k) != v)
        raise SoftPromptError(
            f"{folder / META} was saved by another recipe (differs in {', '.join(changed)}); "
            "resume with the same size and steps, or delete the folder to start over"
        )
    if sha256(folder / WEIGHTS) != meta["sha256"]:
        raise SoftPromptError(f"{folder / WEIGHTS} does not match the SHA-256 in {folder / META}; delete the folder")
    tensors = load_file(str(folder / WEIGHTS))
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(PREFIX)})
    load_optimizer_tensors(optimizer, tensors, meta["param_groups"])
    version, internal, gauss = meta["mixture_rng"]
    rng.setstate((version, tuple(internal), gauss))
    return meta["losses"], meta["seconds"]
