"""Pretrain `builtin:tiny-tasks`: a small GPT-2 that can do the synthetic tasks when told which behaviour.

    python scripts/build_builtin.py --out models/tiny-tasks        # 31-46 minutes on 2 CPU cores

Each training sequence is [instruction (+ "\\n")] [source] [target] [EOS], the source
and target built by `data.encode_example` exactly as prompt tuning builds them, so
the model learns the very format a soft prompt later steers. The instruction
(`synthetic.INSTRUCTIONS`) selects one of the two behaviours of the record's task;
a share of sequences carries no instruction, or a few junk words, and then the
target is the distractor (`synthetic.DEFAULT`). So without the right words in front
of the source the model does the wrong thing, and a soft prompt has something to learn.

Exact rebuilds: everything is seeded and runs in one process with a fixed thread
count (`Recipe.threads`); the same count on the same kind of CPU gives the same
weights, byte for byte (a different count changes float summation order).
"""

from __future__ import annotations

import json
import math
import random
import string
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import pretrain_state, synthetic
from .builtin import MANIFEST, SIZES, WEIGHTS, record_strings
from .data import encode_example, generation_batch, training_batch
from .files import sha256
from .surgery import fuse_gelu
from .tasks import get_task

EOS = "<|endoftext|>"
TEMPLATE_WORDS = "Context: Question: Answer: Article: Summary: Bulgarian: English:"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the built model's weights."""

    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 256
    vocab_size: int = 1024
    steps: int = 10000
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    """Cosine decay from lr to lr * min_lr_ratio over the steps after warmup."""
    task_weights: tuple[tuple[str, float], ...] = (("qna", 0.4), ("sum", 0.35), ("tx", 0.25))
    """How often each task is drawn: the lookup and the copying take longer to learn than the lexicon."""
    untaught_share: float = 0.2
    """Share of sequences with no instruction or junk words instead: their target is the distractor."""
    noisy_share: float = 0.3
    """Share of instructed sequences whose instruction sits among junk words: the model learns to look for
    the instruction's words rather than the exact sequence, which a soft prompt can imitate more easily."""
    newline_share: float = 0.5
    """Share of sequences whose instruction (or junk) ends in a newline before the source; the rest run straight
    into it, as a soft prompt does. Always taught the newline, the model came to align the words it translates
    by it: without it, the oracle instruction's own loss rose from 0.002 to 2.27, and tuning stalled there."""
    seed: int = 0
    threads: int = 2
    eval_per_behaviour: int = 200
    """Held-out records per (task, behaviour) for the accuracy in the manifest."""

    def __post_init__(self):  # read back from a manifest's JSON, the weights are lists
        object.__setattr__(self, "task_weights", tuple((t, float(w)) for t, w in self.task_weights))

    @classmethod
    def for_size(cls, size: str, **overrides) -> Recipe:
        """The recipe of one size of the family (builtin.SIZES): only n_layer and n_embd differ."""
        n_layer, n_embd = SIZES[size]
        return cls(n_layer=n_layer, n_embd=n_embd, **overrides)


# ---------------------------------------------------------------- tokenizer and model


def train_tokenizer(recipe: Recipe):
    """A byte-level BPE trained on the synthetic splits and the instructions (every word one token)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    lex = synthetic.lexicon()
    texts = [TEMPLATE_WORDS] * 50 + list(synthetic.INSTRUCTIONS.values()) * 50
    for task in synthetic.RECORDS:
        for record in synthetic.split_records(task, "train", lex):
            texts += record_strings(record)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=recipe.vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS)
    tokenizer.model_max_length = recipe.n_positions
    return tokenizer


def new_model(recipe: Recipe, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=recipe.n_positions,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,  # no dropout: the task is noise-free and rebuilds stay exact
    )
    torch.manual_seed(recipe.seed)
    return GPT2LMHeadModel(config)


# ---------------------------------------------------------------- the mixture


class Mixture:
    """Seeded stream of (source_ids, target_ids, (task, behaviour)) over every task and behaviour."""

    def __init__(self, tokenizer, seed: int, recipe: Recipe):
        self.tok, self.rng, self.recipe = tokenizer, random.Random(seed), recipe
        self.lex = synthetic.lexicon()
        self.prefix = {key: self._ids(text + "\n") for key, text in synthetic.INSTRUCTIONS.items()}
        """The oracle's form of each instruction (evaluate.py's text baseline also ends it with a newline)."""
        self.tasks, self.weights = zip(*recipe.task_weights, strict=True)

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def example(self, task: str, record: dict[str, Any], behaviour: str, prefix: list[int]) -> dict[str, Any]:
        enc = encode_example(record, get_task(task), self.tok, budget=10**6, max_target=10**6)
        target = self._ids(" " + synthetic.BEHAVIOURS[task][behaviour](record)) + [self.tok.eos_token_id]
        return {"source_ids": prefix + enc["source_ids"], "target_ids": target}

    def draw(self) -> tuple[dict[str, Any], tuple[str, str]]:
        task = self.rng.choices(self.tasks, self.weights)[0]
        record = synthetic.RECORDS[task](self.rng, self.lex, "pretrain")
        end = "\n" if self.rng.random() < self.recipe.newline_share else ""
        if self.rng.random() < self.recipe.untaught_share:
            behaviour = synthetic.DEFAULT[task]
            prefix = [] if self.rng.random() < 0.5 else self._ids(self._junk(1, 4) + end)
            return self.example(task, record, behaviour, prefix), (task, "untaught")
        behaviour = self.rng.choice(sorted(synthetic.BEHAVIOURS[task]))
        words = [synthetic.INSTRUCTIONS[(task, behaviour)]]
        if self.rng.random() < self.recipe.noisy_share:
            words = [self._junk(0, 2), *words, self._junk(0, 2)]
        prefix = self._ids(" ".join(w for w in words if w) + end)
        return self.example(task, record, behaviour, prefix), (task, behaviour)

    def _junk(self, least: int, most: int) -> str:
        """least..most made-up lowercase words: instructions the model was never taught."""
        letters = string.ascii_lowercase
        return " ".join(
            "".join(self.rng.choice(letters) for _ in range(self.rng.randint(3, 9)))
            for _ in range(self.rng.randint(least, most))
        )


def lr_at(step: int, r: Recipe) -> float:
    if step < r.warmup_steps:
        return r.lr * (step + 1) / r.warmup_steps
    progress = (step - r.warmup_steps) / max(1, r.steps - r.warmup_steps)
    return r.lr * (r.min_lr_ratio + (1 - r.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---------------------------------------------------------------- training and accuracy


def pretrain(
    recipe: Recipe,
    steps: int | None = None,
    log: Callable[[str], None] = print,
    state_dir: Path | None = None,
    save_every: int = 500,
):
    """(model, tokenizer, losses): the recipe run for `steps` (default recipe.steps) optimizer steps."""
    return timed_pretrain(recipe, steps, log, state_dir, save_every)[:3]


def timed_pretrain(recipe: Recipe, steps, log, state_dir, save_every):
    """pretrain's (model, tokenizer, losses) and the seconds it trained, counting those before a resume.

    With `state_dir`, the run's whole state (weights, AdamW moments, the mixture's RNG, the losses so far) is
    saved there every `save_every` steps, and a run started with a state_dir that holds one goes on from it:
    the result is the same, byte for byte, as one uninterrupted run.
    """
    torch.set_num_threads(recipe.threads)
    tokenizer = train_tokenizer(recipe)
    model = new_model(recipe, tokenizer)
    fuse_gelu(model)  # the fused GELU that prompt tuning runs by default; the saved config stays gelu_new
    mixture = Mixture(tokenizer, recipe.seed, recipe)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.98), weight_decay=0.01)
    losses, seconds = [], 0.0
    if state_dir is not None and pretrain_state.saved(state_dir):
        losses, seconds = pretrain_state.load(state_dir, recipe, model, opt, mixture.rng)
        log(f"resumed from {state_dir} at step {len(losses)}")
    model.train()
    started = time.time() - seconds
    for step in range(len(losses), recipe.steps if steps is None else steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, recipe)
        batch = training_batch([mixture.draw()[0] for _ in range(recipe.batch_size)], tokenizer.eos_token_id)
        loss = target_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            recent = sum(losses[-100:]) / 100
            log(f"step {step + 1} | loss {recent:.4f} | lr {lr_at(step, recipe):.2e} | {time.time() - started:.0f}s")
        if state_dir is not None and (step + 1) % save_every == 0:
            pretrain_state.save(state_dir, recipe, model, opt, mixture.rng, losses, time.time() - started)
    model.eval()
    return model, tokenizer, losses, time.time() - started


def target_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own causal-LM loss (mean over target tokens), with the output layer run on the target
    positions only: a third of the FLOPs of a step went to logits nobody scores."""
    hidden = model.transformer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    labels = batch["labels"][:, 1:]
    scored = labels != -100
    logits = model.lm_head(hidden[:, :-1][scored])
    return torch.nn.functional.cross_entropy(logits.float(), labels[scored])


@torch.no_grad()
def behaviour_accuracy(model, tokenizer, recipe: Recipe, seed: int = 99) -> dict[str, float]:
    """Greedy exact-match accuracy per task/behaviour (and untaught) on fresh records, in percent."""
    mixture = Mixture(tokenizer, seed, recipe)
    eos = tokenizer.eos_token_id
    out = {}
    for task in sorted(synthetic.RECORDS):
        records = [synthetic.RECORDS[task](mixture.rng, mixture.lex, "eval") for _ in range(recipe.eval_per_behaviour)]
        cases = {
            b: [mixture.example(task, r, b, mixture.prefix[(task, b)]) for r in records]
            for b in sorted(synthetic.BEHAVIOURS[task])
        }
        for b in sorted(synthetic.BEHAVIOURS[task]):  # the instruction running straight into the source
            bare = mixture._ids(synthetic.INSTRUCTIONS[(task, b)])
            cases[f"{b}, no newline"] = [mixture.example(task, r, b, bare) for r in records]
        cases["untaught"] = [mixture.example(task, r, synthetic.DEFAULT[task], []) for r in records]
        for name, rows in cases.items():
            hits = 0
            for i in range(0, len(rows), 50):
                chunk = rows[i : i + 50]
                batch = generation_batch([r["source_ids"] for r in chunk], eos)
                width = max(len(r["target_ids"]) for r in chunk)
                new = model.generate(
                    **batch, max_new_tokens=width, do_sample=False, eos_token_id=eos, pad_token_id=eos
                )[:, batch["input_ids"].shape[1] :]
                hits += sum(new[j, : len(r["target_ids"])].tolist() == r["target_ids"] for j, r in enumerate(chunk))
            out[f"{task}/{name}"] = round(100.0 * hits / len(rows), 1)
    return out


def build(
    out_dir: str | Path,
    recipe: Recipe,
    command: str,
    log: Callable[[str], None] = print,
    state_dir: Path | None = None,
    save_every: int = 500,
) -> dict[str, Any]:
    """Pretrain, measure, and save model, tokenizer and manifest into out_dir; returns the manifest.

    With `state_dir` the pretraining saves its state there every `save_every` steps and the same call after a
    kill goes on from the last one (see `pretrain`); the manifest's seconds count every session's.
    """
    model, tokenizer, losses, pretrain_s = timed_pretrain(recipe, None, log, state_dir, save_every)
    started = time.time()
    accuracy = behaviour_accuracy(model, tokenizer, recipe)
    log(f"accuracy: {accuracy}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.activation_function = "gelu_new"  # saved as GPT-2 ships; softprompt fuses it again at load
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    manifest = {
        "name": out.name,
        "sha256": {WEIGHTS: sha256(out / WEIGHTS)},
        "recipe": asdict(recipe),
        "seeds": {
            "torch": recipe.seed,
            "mixture": recipe.seed,
            "accuracy": 99,
            "lexicon": synthetic.LEXICON_SEED,
            "splits": synthetic.SPLIT_SEEDS,
        },
        "threads": recipe.threads,
        "parameters": sum(p.numel() for p in model.parameters()),
        "instructions": {f"{t}/{b}": text for (t, b), text in synthetic.INSTRUCTIONS.items()},
        "wanted": synthetic.WANTED,
        "untaught_does": synthetic.DEFAULT,
        "accuracy_percent": accuracy,
        "first_losses": losses[:10],
        "loss_every_100": [round(sum(losses[i : i + 100]) / 100, 4) for i in range(0, len(losses), 100)],
        "wall_seconds": round(pretrain_s + time.time() - started),
        "pretrain_seconds": round(pretrain_s),
        "torch": torch.__version__,
        "command": command,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest
