"""Evaluation metrics for the three softprompt tasks.

Plain functions over lists of strings; nothing else from ``softprompt`` is
imported, so the module can be used on its own.

* ``qna`` (SQuAD v1.1): :func:`exact_match` and :func:`f1`, following the
  official v1.1 evaluation script (normalise, max over the reference answers of
  each example, mean over examples, scaled to 0-100).
* ``sum`` (CNN/DailyMail): :func:`rouge` -- ROUGE-1/2/L/Lsum F-measure from
  ``rouge_score`` with the Porter stemmer, mean over examples, 0-100.
  For ``rougeLsum`` sentences must be separated by ``"\\n"`` (as in the
  CNN/DailyMail highlights); ``rouge_score`` splits on newlines itself.
* ``tx`` (translation): :func:`bleu` -- corpus-level sacreBLEU BLEU and chrF
  with sacreBLEU defaults (13a tokenisation), one reference per example.

:func:`strict_exact_match` is exact match without any normalisation, for a
task whose answers are exact strings (word order, case and articles count).
Which metric a task uses is said by its ``softprompt.tasks.Task`` (``Task.score``).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

__all__ = [
    "normalize_answer",
    "exact_match",
    "f1",
    "rouge",
    "bleu",
    "strict_exact_match",
    "ROUGE_TYPES",
]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _check_lengths(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references must have the same length, got "
            f"{len(predictions)} predictions and {len(references)} references"
        )
    if len(predictions) == 0:
        raise ValueError("predictions and references must not be empty")


def _check_strings(name: str, items: Sequence) -> None:
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(item).__name__}")


def _answer_list(refs, index: int) -> list[str]:
    """One example's reference answers as a list (a bare str is one answer)."""
    if isinstance(refs, str):
        refs = [refs]
    refs = list(refs)
    if not refs:
        raise ValueError(f"references[{index}] has no reference answers")
    _check_strings(f"references[{index}]", refs)
    return refs


# --------------------------------------------------------------------------- #
# SQuAD v1.1
# --------------------------------------------------------------------------- #
def normalize_answer(s: str) -> str:
    """SQuAD v1.1 answer normalisation.

    Lower-case, drop every ``string.punctuation`` character, remove the
    articles ``a``/``an``/``the`` as whole words, and collapse whitespace.
    The steps are applied in the same order as the official script
    (lower -> punctuation -> articles -> whitespace).
    """
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def _em_single(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def _f1_single(prediction: str, reference: str) -> float:
    """Token F1 between two answers, exactly as SQuAD v1.1.

    Tokens are the whitespace tokens of the normalised strings; overlap is the
    multiset (``Counter``) intersection. If nothing overlaps (which includes a
    prediction or a reference with no tokens, even when *both* are empty) the
    F1 is 0 -- v1.1 has no special case for empty answers (v2.0 does).
    """
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    num_same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def _squad_metric(metric_fn, predictions, references) -> float:
    _check_lengths(predictions, references)
    _check_strings("predictions", predictions)
    total = 0.0
    for i, (pred, refs) in enumerate(zip(predictions, references, strict=False)):
        total += max(metric_fn(pred, ref) for ref in _answer_list(refs, i))
    return 100.0 * total / len(predictions)


def exact_match(predictions: list[str], references: list[list[str]]) -> float:
    """SQuAD v1.1 exact match, 0-100.

    Each example scores 1 if its normalised prediction equals any of its
    normalised reference answers, else 0; the result is the mean x 100.
    ``references[i]`` is the list of acceptable answers for example ``i``
    (a bare string is taken as a single answer).

    Raises ``ValueError`` if the lists differ in length or are empty.
    """
    return _squad_metric(_em_single, predictions, references)


def strict_exact_match(predictions: list[str], references: list[list[str]]) -> float:
    """Exact match without normalisation, 0-100: an example scores 1 if its prediction equals one of its
    references character for character (no lower-casing, no punctuation or article removal, whitespace as it is).

    So "the a cat" against "cat a the" scores 0 (SQuAD's :func:`exact_match` scores it 100). ``references[i]``
    is a list of acceptable answers or a bare string. Raises ``ValueError`` on length mismatch or empty input.
    """
    return _squad_metric(lambda prediction, reference: float(prediction == reference), predictions, references)


def f1(predictions: list[str], references: list[list[str]]) -> float:
    """SQuAD v1.1 token F1, 0-100.

    Per example, the maximum token F1 over its reference answers (see
    :func:`normalize_answer`; overlap counted with multiset semantics; no
    overlap -- including an empty prediction -- gives 0). Mean over examples
    x 100. Raises ``ValueError`` on length mismatch or empty input.
    """
    return _squad_metric(_f1_single, predictions, references)


# --------------------------------------------------------------------------- #
# ROUGE
# --------------------------------------------------------------------------- #
def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE F-measure x 100 for ``rouge1``, ``rouge2``, ``rougeL``, ``rougeLsum``.

    Uses ``rouge_score.rouge_scorer.RougeScorer(..., use_stemmer=True)``, which
    lower-cases and keeps only ``[a-z0-9]`` tokens. For ``rougeLsum`` the texts
    are passed unchanged and ``rouge_score`` (with its default
    ``split_summaries=False``) splits them into sentences on ``"\\n"``; so
    multi-sentence summaries must be newline-separated (no nltk splitting is
    done here). For the other types newlines are ordinary whitespace.
    """
    from rouge_score import rouge_scorer

    _check_lengths(predictions, references)
    _check_strings("predictions", predictions)
    _check_strings("references", references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, ref in zip(predictions, references, strict=False):
        # RougeScorer.score(target, prediction): reference first.
        scores = scorer.score(ref, pred)
        for key in ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    n = len(predictions)
    return {key: 100.0 * totals[key] / n for key in ROUGE_TYPES}


# --------------------------------------------------------------------------- #
# BLEU / chrF
# --------------------------------------------------------------------------- #
def bleu(predictions: list[str], references: list[str]) -> dict:
    """Corpus-level sacreBLEU BLEU and chrF (0-100) with sacreBLEU defaults.

    One reference per example; default 13a tokenisation, mixed case,
    exponential smoothing. Returns ``{"bleu", "chrf", "signature"}`` where
    ``signature`` is sacreBLEU's BLEU signature string
    (e.g. ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``).
    """
    from sacrebleu.metrics import BLEU, CHRF

    _check_lengths(predictions, references)
    _check_strings("predictions", predictions)
    _check_strings("references", references)
    hyps = list(predictions)
    refs = [list(references)]  # one reference stream
    bleu_metric = BLEU()
    chrf_metric = CHRF()
    bleu_score = bleu_metric.corpus_score(hyps, refs)
    chrf_score = chrf_metric.corpus_score(hyps, refs)
    return {
        "bleu": float(bleu_score.score),
        "chrf": float(chrf_score.score),
        "signature": str(bleu_metric.get_signature()),
    }
