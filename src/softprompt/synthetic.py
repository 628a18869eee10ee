"""Synthetic versions of the three tasks, in the Hub schemas, for a built-in model that needs its prompt.

Every record follows a rule a small transformer can learn and a metric can check,
and every input format supports two behaviours: the one the task's data wants and
a distractor on the same input. The built-in `builtin:tiny-tasks` model is
pretrained on both, each selected by a plain-text instruction at the start of the
sequence (see `pretrain.py`); a soft prompt has to learn to ask for the wanted one.

    qna  {"context": "Guests: Mira Tovan, Dako Pelo (host), Suri Kamet.", "question": "Which town is the host from?",
          "answers": {"text": ["Pelo"], "answer_start": [24]}}
         wanted: the town of the guest marked as host (a one-hop lookup: the town before the marker);
         distractor: the host's name.
    sum  {"article": "rivo dask.\\ntarn pol mell.\\n...", "highlights": "rivo dask.\\ntarn pol mell.", "id": "..."}
         wanted: the article's first two sentences (lines); distractor: its last two.
    tx   {"translation": {"bg": "Кора ветал ...", "en": "river cold ..."}}
         wanted: the word-by-word translation through a fixed lexicon; distractor: the Bulgarian copied.

The words are invented (syllable strings from one fixed seed), so nothing here
depends on a real language, and every split is drawn from its own seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEXICON_SEED = 20261124
SPLIT_SEEDS = {"train": 1, "validation": 2, "test": 3}
"""Each split is drawn from its own seed (per task, offset below), and overlapping records are removed."""
SPLIT_SIZES = {"train": 2000, "validation": 200, "test": 200}
TASK_SEED_OFFSET = {"qna": 100, "sum": 200, "tx": 300}

_LATIN = ["ba", "de", "ki", "lo", "mu", "na", "pe", "ri", "so", "ta", "ve", "zo", "ga", "hu", "mi", "ro"]
_CYRILLIC = ["ба", "ве", "ги", "до", "жу", "за", "ки", "ло", "ми", "на", "по", "ру", "со", "ту", "фе", "чо"]
_ENGLISH = (
    "river stone house bread water light cloud field horse market bridge garden winter summer door road "
    "apple table window forest letter mountain village music paper silver morning evening friend castle "
    "harbor island valley kitchen candle ribbon"
).split()


def _pseudo_words(rng: random.Random, syllables: list[str], n: int, capital: bool) -> list[str]:
    """n distinct words of 2-3 syllables."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3)))
        if word not in seen:
            seen.add(word)
            out.append(word.capitalize() if capital else word)
    return out


@dataclass(frozen=True)
class Lexicon:
    """The invented vocabulary every synthetic record draws from."""

    guests: tuple[str, ...]
    towns: tuple[str, ...]
    words: tuple[str, ...]
    """Words of the summarisation articles."""
    bulgarian: tuple[str, ...]
    english: tuple[str, ...]
    """english[i] translates bulgarian[i]: a one-to-one lexicon."""

    @property
    def bg_to_en(self) -> dict[str, str]:
        return dict(zip(self.bulgarian, self.english, strict=False))


def lexicon() -> Lexicon:
    rng = random.Random(LEXICON_SEED)
    latin = _pseudo_words(rng, _LATIN, 24 + 24 + 40, capital=False)
    cyrillic = _pseudo_words(rng, _CYRILLIC, len(_ENGLISH), capital=False)
    return Lexicon(
        guests=tuple(w.capitalize() for w in latin[:24]),
        towns=tuple(w.capitalize() for w in latin[24:48]),
        words=tuple(latin[48:]),
        bulgarian=tuple(cyrillic),
        english=tuple(_ENGLISH),
    )


# ---------------------------------------------------------------- records


QNA_QUESTION = "Which town is the host from?"
HOST_MARK = " (host)"


def qna_record(rng: random.Random, lex: Lexicon, ident: str) -> dict[str, Any]:
    # One marked guest among 2-3, the answer just before the marker: a lookup a 4-layer model learns in
    # its budget (a lookup keyed by a name in the question, as a first design had it, was not learned).
    k = rng.randint(2, 3)
    guests, towns = rng.sample(lex.guests, k), rng.sample(lex.towns, k)
    j = rng.randrange(k)
    facts = [f"{g} {t}" + (HOST_MARK if i == j else "") for i, (g, t) in enumerate(zip(guests, towns, strict=True))]
    context = "Guests: " + ", ".join(facts) + "."
    start = context.index(f"{guests[j]} {towns[j]}{HOST_MARK}") + len(guests[j]) + 1
    return {
        "id": ident,
        "title": "Guests",
        "context": context,
        "question": QNA_QUESTION,
        "answers": {"text": [towns[j]], "answer_start": [start]},
    }


def sum_record(rng: random.Random, lex: Lexicon, ident: str) -> dict[str, Any]:
    lengths = [rng.randint(2, 3) for _ in range(4)]  # four sentences: the first two and the last two never meet
    words = rng.sample(lex.words, sum(lengths))  # no word twice, so copying a sentence is never ambiguous
    sentences, start = [], 0
    for n in lengths:
        sentences.append(" ".join(words[start : start + n]) + ".")
        start += n
    # One sentence per line, as the highlights are: a summary is then lines copied from the article.
    return {"id": ident, "article": "\n".join(sentences), "highlights": "\n".join(sentences[:2])}


def tx_record(rng: random.Random, lex: Lexicon, ident: str) -> dict[str, Any]:
    idx = rng.sample(range(len(lex.bulgarian)), rng.randint(3, 6))  # no word twice, as in sum
    return {"translation": {"bg": " ".join(lex.bulgarian[i] for i in idx), "en": " ".join(lex.english[i] for i in idx)}}


RECORDS: dict[str, Callable[[random.Random, Lexicon, str], dict[str, Any]]] = {
    "qna": qna_record,
    "sum": sum_record,
    "tx": tx_record,
}


# ---------------------------------------------------------------- behaviours


def _host(record: dict[str, Any]) -> str:
    """The name of the guest marked as host (the word before their town)."""
    fact = record["context"].split(HOST_MARK)[0].rsplit(", ", 1)[-1].removeprefix("Guests: ")
    return fact.split(" ")[0]


def _sentences(article: str) -> list[str]:
    return [line.strip() for line in article.split("\n") if line.strip()]


BEHAVIOURS: dict[str, dict[str, Callable[[dict[str, Any]], str]]] = {
    "qna": {
        "town": lambda r: r["answers"]["text"][0],
        "host": _host,
    },
    "sum": {
        "first": lambda r: "\n".join(_sentences(r["article"])[:2]),
        "last": lambda r: "\n".join(_sentences(r["article"])[-2:]),
    },
    "tx": {
        "translate": lambda r: r["translation"]["en"],
        "copy": lambda r: r["translation"]["bg"],
    },
}
"""Per task, behaviour name -> the text that behaviour answers with (no leading space, no EOS)."""

WANTED = {"qna": "town", "sum": "first", "tx": "translate"}
"""The behaviour each task's data (and so its metric) asks for; the other one is the distractor."""

DEFAULT = {"qna": "host", "sum": "last", "tx": "copy"}
"""What the model does with no instruction, or one it was never taught: the distractor."""

INSTRUCTIONS = {
    ("qna", "town"): "reply with the place",
    ("qna", "host"): "reply with the person",
    ("sum", "first"): "keep the opening lines",
    ("sum", "last"): "keep the closing lines",
    ("tx", "translate"): "turn each word over",
    ("tx", "copy"): "repeat the source text",
}
"""The hard instruction that selects each behaviour in pretraining (never a config's init words)."""


# ---------------------------------------------------------------- splits


def split_records(task: str, split: str, lex: Lexicon | None = None) -> list[dict[str, Any]]:
    """The shipped split, regenerated: SPLIT_SIZES[split] records from the split's own seed.

    Train drops any record whose input also occurs in validation or test, so no scored
    example was trained on (the later splits are drawn first).
    """
    lex = lex or lexicon()
    taken: set[str] = set()
    for earlier in ("test", "validation", "train"):
        records = _draw(task, earlier, lex, exclude=taken)
        if earlier == split:
            return records
        taken |= {_input_key(task, r) for r in records}
    raise KeyError(split)


def _draw(task: str, split: str, lex: Lexicon, exclude: set[str]) -> list[dict[str, Any]]:
    rng = random.Random(SPLIT_SEEDS[split] + TASK_SEED_OFFSET[task])
    out, seen = [], set(exclude)
    while len(out) < SPLIT_SIZES[split]:
        record = RECORDS[task](rng, lex, f"{task}-{split}-{len(out):05d}")
        key = _input_key(task, record)
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out


def _input_key(task: str, record: dict[str, Any]) -> str:
    if task == "qna":
        return record["context"] + "|" + record["question"]
    if task == "sum":
        return record["article"]
    return record["translation"]["bg"]


def write_splits(out_dir: str | Path) -> list[Path]:
    """Write <out_dir>/<task>/<split>.jsonl for every task and split; returns the files."""
    lex = lexicon()
    written = []
    for task in RECORDS:
        for split in SPLIT_SIZES:
            path = Path(out_dir) / task / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = [json.dumps(r, ensure_ascii=False) for r in split_records(task, split, lex)]
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            written.append(path)
    return written
