"""Built-in models, for working offline: `builtin:tiny-tasks` (shipped) and `builtin:tiny-gpt2` (built on use).

`builtin:tiny-tasks` is a small GPT-2 pretrained here on synthetic versions of the
three tasks (see `pretrain.py`, `synthetic.py` and docs/builtin-model.md). It ships
in the repository under models/tiny-tasks/ with a manifest; loading checks the
weights' SHA-256 against it. The smoke configs use it: a prompt visibly learns.

`builtin:tiny-gpt2` is for fast plumbing tests:

On first use we train a byte-level BPE tokenizer on the bundled sample text
(data/samples), build a 2-layer GPT-2 with hidden size 64 and 256 positions
from a fixed seed, give it a few seconds of language-model training on that
same text, and save both with `save_pretrained` into a cache folder. From then
on it loads through the same `from_pretrained` path as any local model.

Why the short training: a GPT-2 straight from random init predicts a uniform
distribution whatever its input (logits ~1e-3), so no prompt can move its
loss and a smoke run would show a flat line. After ~300 steps it has learned
the sample text's word statistics, its loss depends on its input, and prompt
tuning visibly lowers it. It still writes no meaningful text: it proves the
pipeline runs, not quality.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .errors import SoftPromptError
from .files import sha256

BUILTIN_PREFIX = "builtin:"
SIZES = {"300k": (4, 64), "1m": (4, 128), "5m": (6, 256)}
"""The tiny-tasks family: (n_layer, n_embd) per size, named by parameter count; one recipe otherwise."""
FAMILY = {size: "tiny-tasks" if size == "1m" else f"tiny-tasks-{size}" for size in SIZES}
"""The folder under models/ of each size: 1m is builtin:tiny-tasks itself (builtin:tiny-tasks-1m names it too)."""
ALIASES = {"tiny-tasks-1m": "tiny-tasks"}
SHIPPED = tuple(FAMILY.values())
"""Built-ins that ship in the repository (models/<name>/) rather than being built on first use."""
BUILTIN_MODELS = ("tiny-gpt2", *SHIPPED, *ALIASES)
MANIFEST = "manifest.json"
"""A shipped model's manifest: its recipe, accuracy and the SHA-256 of its weights (written by pretrain.py)."""
WEIGHTS = "model.safetensors"
VOCAB_SIZE = 1024
EOS = "<|endoftext|>"
_ARCH = dict(n_layer=2, n_head=4, n_embd=64, n_positions=256, n_inner=256)
_SEED = 0
_LM_STEPS, _LM_BATCH, _LM_SEQ, _LM_LR = 300, 8, 128, 3e-3
_VERSION = 2  # bump when the recipe changes, so caches are rebuilt


def models_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "models"


def shipped_path(name: str) -> Path:
    """models/<name>/, after checking its weights against the SHA-256 in its manifest."""
    folder = models_dir() / name
    manifest = folder / MANIFEST
    if not manifest.is_file():
        size = next(s for s, n in FAMILY.items() if n == name)
        raise SoftPromptError(
            f"{BUILTIN_PREFIX}{name} is not built: {manifest} is missing; build it with "
            f"`python scripts/build_builtin.py --size {size}` (docs/builtin-model.md), or install softprompt "
            "from a clone of the repository (pip install -e .)"
        )
    expected = json.loads(manifest.read_text(encoding="utf-8"))["sha256"][WEIGHTS]
    if not (folder / WEIGHTS).is_file() or sha256(folder / WEIGHTS) != expected:
        raise SoftPromptError(
            f"{folder / WEIGHTS} does not match the SHA-256 in {manifest}: the file is damaged or was changed; "
            "restore it with git checkout, or rebuild it with scripts/build_builtin.py"
        )
    return folder


def cache_root() -> Path:
    """SOFTPROMPT_CACHE, else ~/.cache/softprompt."""
    root = os.environ.get("SOFTPROMPT_CACHE") or Path.home() / ".cache" / "softprompt"
    return Path(root)


def builtin_name(path: str) -> str | None:
    """`builtin:<name>` when `path` is where a built-in model lives (as PEFT adapters record their base), else None."""
    try:
        folder = Path(path).resolve()
    except (OSError, RuntimeError):
        return None
    for name in SHIPPED:
        if folder == (models_dir() / name).resolve():
            return BUILTIN_PREFIX + name
    if folder.parent == cache_root().resolve() and folder.name.startswith("tiny-gpt2-"):
        return BUILTIN_PREFIX + "tiny-gpt2"
    return None


def builtin_path(name_or_path: str) -> Path:
    """The local directory holding a built-in model, building it if needed."""
    name = name_or_path[len(BUILTIN_PREFIX) :]
    name = ALIASES.get(name, name)
    if name not in BUILTIN_MODELS:
        raise SoftPromptError(
            f"model.name_or_path '{name_or_path}': unknown built-in model; built-ins are "
            + ", ".join(BUILTIN_PREFIX + m for m in BUILTIN_MODELS)
        )
    if name in SHIPPED:
        return shipped_path(name)
    texts = _corpus()
    digest = hashlib.sha256(("\n".join(texts) + json.dumps(_ARCH) + str(_VERSION)).encode()).hexdigest()[:12]
    target = cache_root() / f"{name}-{digest}"
    if not (target / "config.json").is_file():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)  # fail before the build, not after
            _build(texts, target)
        except OSError as err:
            raise SoftPromptError(
                f"cannot save {name_or_path} into the cache folder {target.parent} ({err.strerror or err}); "
                "set SOFTPROMPT_CACHE to a writable folder"
            ) from err
    return target


def _corpus() -> list[str]:
    from .data import samples_dir  # imported here: data imports torch and datasets' helpers, needed only to build

    root = samples_dir()
    files = sorted(root.glob("*/*.jsonl")) if root.is_dir() else []
    if not files:
        raise SoftPromptError(
            f"builtin:tiny-gpt2 trains its tokenizer on the bundled samples, but none were found in {root}; "
            "install softprompt from a clone of the repository (pip install -e .)"
        )
    texts = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.extend(record_strings(json.loads(line)))
    return texts


def record_strings(obj) -> list[str]:
    """Every text field of a JSON record (ids and answer offsets left out), in a fixed order."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in sorted(obj.items()) if k not in ("id", "answer_start") for s in record_strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in record_strings(v)]
    return []


def _build(texts: list[str], target: Path) -> None:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    # The task templates' words are added so every piece of a prompt tokenises sensibly.
    extra = ["Context: Question: Answer: Article: Summary: Bulgarian: English:"] * 20
    bpe.train_from_iterator(texts + extra, vocab_size=VOCAB_SIZE, min_frequency=2, special_tokens=[EOS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS)
    tokenizer.model_max_length = _ARCH["n_positions"]

    config = GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **_ARCH,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        model = GPT2LMHeadModel(config)
        _warm_up(model, tokenizer, texts)

    print(f"built {BUILTIN_PREFIX}tiny-gpt2 (first use only) in {target}", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a concurrent or killed build never leaves half a model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _warm_up(model, tokenizer, texts: list[str]) -> None:
    """A few seconds of seeded next-token training on the sample text (see the module docstring)."""
    import torch

    ids = []
    for text in texts:
        ids += tokenizer(text, verbose=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor(ids)
    gen = torch.Generator().manual_seed(_SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=_LM_LR)
    model.train()
    for _ in range(_LM_STEPS):
        starts = torch.randint(0, len(ids) - _LM_SEQ - 1, (_LM_BATCH,), generator=gen)
        x = torch.stack([ids[s : s + _LM_SEQ] for s in starts.tolist()])
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
