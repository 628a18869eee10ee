"""What a trained prompt drifted towards: norms, distance from the init, nearest vocabulary tokens.

    report = inspect_prompt("checkpoints/smoke-sum/epoch_010", k=5)
    print(format_report(report))

For each prompt vector p_i [H]: its L2 norm; the cosine distance 1 - cos(p_i,
p0_i) from its initial vector p0_i, re-created with `init_prompt` from the
checkpoint's prompt.json (init, init_text) on the same base model (and, for
the seeded vocab/random inits, the run's seed from trainer_state.json); and
the k vocabulary tokens whose input embeddings (the table [V, H]) have the
highest cosine similarity to p_i. Soft prompts usually end up far from every
token, so the nearest tokens say where a vector points, not what it "means".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoint import STATE_META, resolve_prompt_dir
from .config import ModelConfig, PromptInit
from .errors import SoftPromptError
from .hub import load_base
from .model import init_prompt, read_prompt


@dataclass
class VectorReport:
    index: int
    init_label: str
    """The word (words init) or token (text, vocab init) the vector started from; '-' for random."""
    norm: float
    init_distance: float | None
    """Cosine distance from the initial vector; None when the init cannot be re-created."""
    nearest: list[tuple[str, float]]
    """(token text, cosine similarity), most similar first."""


@dataclass
class PromptReport:
    checkpoint: Path
    base_model: str
    init: str | None
    init_text: str | None
    epoch: int | None
    vocab_norm: float
    """Mean L2 norm of the vocabulary embeddings, for scale."""
    vectors: list[VectorReport] = field(default_factory=list)


def inspect_prompt(path: str | Path, k: int = 5) -> PromptReport:
    if k < 1:
        raise SoftPromptError(f"k must be at least 1, got {k}")
    ckpt = resolve_prompt_dir(path)
    prompt, meta = read_prompt(ckpt)
    if meta.get("method") == "prefix_tuning":
        raise SoftPromptError(
            f"{ckpt}: a prefix_tuning prompt holds keys and values for every layer, not input vectors: "
            "inspection (norms, nearest tokens) works for prompt_tuning and p_tuning prompts only"
        )
    if not meta.get("base_model"):
        raise SoftPromptError(f"{ckpt}: prompt.json does not name the base model the prompt was trained on")
    run_cfg = _run_config(ckpt)
    base, tokenizer = load_base(
        ModelConfig(name_or_path=meta["base_model"], revision=run_cfg.get("model", {}).get("revision"))
    )
    table = base.get_input_embeddings().weight.detach().float()
    if prompt.shape[1] != table.shape[1]:
        raise SoftPromptError(
            f"{ckpt}: the prompt has hidden size {prompt.shape[1]}, "
            f"the base model {meta['base_model']} {table.shape[1]}"
        )

    init = _initial_prompt(base, tokenizer, meta, prompt.shape[0], run_cfg.get("train", {}).get("seed"))
    if meta.get("method") == "p_tuning":  # init made the encoder's inputs; its outputs started elsewhere
        init = None
    sims = F.normalize(prompt, dim=-1) @ F.normalize(table, dim=-1).T  # [P, V]
    top = sims.topk(min(k, table.shape[0]), dim=-1)
    init_labels = _init_labels(meta, init, table, tokenizer, prompt.shape[0])

    report = PromptReport(
        checkpoint=ckpt,
        base_model=meta["base_model"],
        init=meta.get("init"),
        init_text=meta.get("init_text"),
        epoch=meta.get("epoch"),
        vocab_norm=table.norm(dim=-1).mean().item(),
    )
    for i in range(prompt.shape[0]):
        distance = None if init is None else 1.0 - F.cosine_similarity(prompt[i], init[i], dim=0).item()
        pairs = zip(top.indices[i].tolist(), top.values[i].tolist(), strict=True)
        nearest = [(_token_text(tokenizer, j), s) for j, s in pairs]
        report.vectors.append(VectorReport(i, init_labels[i], prompt[i].norm().item(), distance, nearest))
    return report


def format_report(report: PromptReport) -> str:
    """A readable table, one line per prompt vector."""
    epoch = f", epoch {report.epoch}" if report.epoch is not None else ""
    init = f"init {report.init} {report.init_text!r}" if report.init else "init unknown"
    lines = [
        f"{report.checkpoint}{epoch}: {len(report.vectors)} prompt vectors on {report.base_model}, {init}",
        f"(vocabulary embeddings have a mean norm of {report.vocab_norm:.3f})",
        "",
        f"{'#':>3}  {'initial':<16} {'norm':>8}  {'cos dist':>8}  nearest tokens (cosine similarity)",
    ]
    for v in report.vectors:
        dist = "-" if v.init_distance is None else f"{v.init_distance:.4f}"
        nearest = ", ".join(f"{text!r} {sim:.3f}" for text, sim in v.nearest)
        lines.append(f"{v.index:>3}  {v.init_label[:16]:<16} {v.norm:>8.3f}  {dist:>8}  {nearest}")
    return "\n".join(lines)


# ---------------------------------------------------------------- helpers


def _run_config(ckpt: Path) -> dict:
    """The training config saved beside the prompt (trainer_state.json), or {} for a bare prompt folder."""
    path = ckpt / STATE_META
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("config") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return {}


def _initial_prompt(base, tokenizer, meta: dict, length: int, seed: int | None) -> torch.Tensor | None:
    mode = meta.get("init")
    if mode not in [m.value for m in PromptInit]:
        return None
    if mode in (PromptInit.VOCAB.value, PromptInit.RANDOM.value) and seed is None:
        return None  # seeded inits need the run's seed, which only trainer_state.json records
    try:
        return init_prompt(base, tokenizer, mode, length, meta.get("init_text"), seed or 0)
    except SoftPromptError:
        return None


def _init_labels(meta: dict, init: torch.Tensor | None, table: torch.Tensor, tokenizer, length: int) -> list[str]:
    if init is None or meta.get("init") == PromptInit.RANDOM.value:
        return ["-"] * length
    if meta.get("init") == PromptInit.WORDS.value:
        return meta["init_text"].split()
    # text and vocab inits copy embedding rows: the row's own token is its nearest neighbour.
    ids = (F.normalize(init, dim=-1) @ F.normalize(table, dim=-1).T).argmax(-1).tolist()
    return [repr(_token_text(tokenizer, j)) for j in ids]


def _token_text(tokenizer, token_id: int) -> str:
    """The token as text; byte-level pieces of a multi-byte character as the tokenizer spells them."""
    text = tokenizer.decode([token_id])
    return tokenizer.convert_ids_to_tokens(token_id) if "\ufffd" in text else text
