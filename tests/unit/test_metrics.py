"""Tests for softprompt.metrics.

Every expected number is worked out by hand in the comment next to it.
"""

import math

import pytest

from softprompt.metrics import (
    bleu,
    exact_match,
    f1,
    normalize_answer,
    rouge,
    strict_exact_match,
)
from softprompt.tasks import TASKS, get_task

ROUGE_KEYS = {"rouge1", "rouge2", "rougeL", "rougeLsum"}


# --------------------------------------------------------------------------- #
# normalize_answer
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The  Cat!", "cat"),  # lower -> "the  cat!" -> drop "!" -> drop "the" -> squeeze
        ("an apple a day", "apple day"),  # "an" and "a" are whole-word articles
        ("theatre", "theatre"),  # "the" inside a word is not an article
        ("A", ""),  # a lone article normalises to nothing
        ("  Hello,\tWorld.  ", "hello world"),  # punctuation + tabs/edges
        ("U.S.A.", "usa"),  # punctuation removed, not replaced by spaces
        ("rock-n-roll", "rocknroll"),  # hyphen is in string.punctuation
        ("Theory of THE universe", "theory of universe"),  # case-insensitive article
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


# --------------------------------------------------------------------------- #
# exact_match
# --------------------------------------------------------------------------- #
def test_exact_match_max_over_references():
    # "The Eiffel Tower!" -> "eiffel tower"; matches ref 1 ("eiffel tower"),
    # not ref 2 ("paris") -> max(1, 0) = 1 -> 100.0
    assert exact_match(["The Eiffel Tower!"], [["Paris", "eiffel tower"]]) == 100.0


def test_exact_match_zero():
    # "eiffel" != "eiffel tower" and != "paris" -> 0 -> 0.0
    assert exact_match(["Eiffel"], [["Eiffel Tower", "Paris"]]) == 0.0


def test_exact_match_mean_over_examples():
    # example 1: "paris" == "paris" -> 1; example 2: "london" != "berlin" -> 0
    # mean = (1 + 0) / 2 = 0.5 -> 50.0
    assert exact_match(["Paris", "London"], [["paris"], ["Berlin"]]) == 50.0


def test_exact_match_bare_string_reference_is_one_answer():
    # a bare str is treated as one answer, not iterated character by character:
    # "paris" == "paris" -> 100.0 (char-wise it would be max over "p","a",... = 0)
    assert exact_match(["Paris"], ["paris"]) == 100.0


# --------------------------------------------------------------------------- #
# f1
# --------------------------------------------------------------------------- #
def test_f1_partial_overlap():
    # pred "the big red ball" -> [big, red, ball]; ref "a red ball" -> [red, ball]
    # common = {red, ball} = 2;  P = 2/3, R = 2/2 = 1
    # F1 = 2*P*R/(P+R) = 2*(2/3)/(5/3) = 4/5 = 0.8 -> 80.0
    assert f1(["the big red ball"], [["a red ball"]]) == pytest.approx(80.0, abs=1e-9)


def test_f1_max_over_references():
    # pred [red, ball]
    # vs "ball":          common 1, P = 1/2, R = 1/1 -> F = 2*(1/2)/(3/2) = 2/3
    # vs "red ball game": common 2, P = 2/2, R = 2/3 -> F = 2*(2/3)/(5/3) = 4/5
    # max = 0.8 -> 80.0
    assert f1(["red ball"], [["ball", "red ball game"]]) == pytest.approx(80.0, abs=1e-9)


def test_f1_mean_over_examples():
    # example 1 = 0.8 (as in test_f1_partial_overlap), example 2: no overlap = 0
    # mean = (0.8 + 0) / 2 = 0.4 -> 40.0
    preds = ["the big red ball", "cat"]
    refs = [["a red ball"], ["dog"]]
    assert f1(preds, refs) == pytest.approx(40.0, abs=1e-9)


def test_f1_empty_prediction_is_zero():
    # pred has no tokens -> common = 0 -> F1 = 0
    assert f1([""], [["an answer"]]) == 0.0


def test_f1_both_empty_after_normalisation_is_zero_v11():
    # "The" and "a" both normalise to "" (no tokens). SQuAD v1.1 has no
    # empty-answer special case: common = 0 -> F1 = 0, while EM compares the
    # normalised strings "" == "" -> 1.
    assert f1(["The"], [["a"]]) == 0.0
    assert exact_match(["The"], [["a"]]) == 100.0


def test_f1_repeated_tokens_use_multiset_overlap():
    # pred [ball, ball, ball] vs ref [ball]: common = min(3, 1) = 1
    # P = 1/3, R = 1/1 -> F = 2*(1/3)/(4/3) = 1/2 -> 50.0
    # (set overlap would wrongly give P = 1 -> 100)
    assert f1(["ball ball ball"], [["ball"]]) == pytest.approx(50.0, abs=1e-9)
    # pred [ball, ball, ball] vs ref [ball, ball]: common = min(3, 2) = 2
    # P = 2/3, R = 2/2 = 1 -> F = 2*(2/3)/(5/3) = 4/5 -> 80.0
    assert f1(["ball ball ball"], [["ball ball"]]) == pytest.approx(80.0, abs=1e-9)


def test_f1_exact_answer_is_100():
    # identical after normalisation -> P = R = 1 -> F1 = 1 -> 100.0
    assert f1(["The Eiffel Tower."], [["eiffel tower"]]) == pytest.approx(100.0)


@pytest.mark.parametrize("fn", [exact_match, f1])
def test_squad_errors(fn):
    with pytest.raises(ValueError, match="same length"):
        fn(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="no reference answers"):
        fn(["a"], [[]])


# --------------------------------------------------------------------------- #
# ROUGE (tokens of <= 3 letters are never stemmed by rouge_score, so the
# hand computations below are unaffected by use_stemmer=True)
# --------------------------------------------------------------------------- #
def test_rouge_identical_is_100():
    # every n-gram / LCS matches: P = R = 1 -> F = 1 -> 100 for all four
    text = "the cat sat on the mat\nthe dog ran off"
    result = rouge([text], [text])
    assert set(result) == ROUGE_KEYS
    for key in ROUGE_KEYS:
        assert result[key] == pytest.approx(100.0, abs=1e-9)


def test_rouge_disjoint_is_0():
    # no shared token -> every overlap count is 0 -> F = 0
    result = rouge(["cat sat"], ["dog ran"])
    for key in ROUGE_KEYS:
        assert result[key] == pytest.approx(0.0, abs=1e-9)


def test_rouge_hand_computed():
    # pred [the, cat, sat] vs ref [the, cat, ran]
    # rouge1: overlap {the, cat} = 2; P = 2/3, R = 2/3 -> F = 2/3 -> 66.67
    # rouge2: pred {the cat, cat sat}, ref {the cat, cat ran}; overlap 1;
    #         P = 1/2, R = 1/2 -> F = 1/2 -> 50.0
    # rougeL: LCS = "the cat" = 2 -> P = R = 2/3 -> 66.67
    # rougeLsum: single sentence -> same as rougeL -> 66.67
    result = rouge(["the cat sat"], ["the cat ran"])
    assert result["rouge1"] == pytest.approx(200 / 3, abs=1e-2)
    assert result["rouge2"] == pytest.approx(50.0, abs=1e-2)
    assert result["rougeL"] == pytest.approx(200 / 3, abs=1e-2)
    assert result["rougeLsum"] == pytest.approx(200 / 3, abs=1e-2)


def test_rouge_mean_over_examples():
    # example 1 identical -> 100; example 2 disjoint -> 0; mean = 50.0
    result = rouge(["cat sat", "cat sat"], ["cat sat", "dog ran"])
    for key in ROUGE_KEYS:
        assert result[key] == pytest.approx(50.0, abs=1e-9)


def test_rouge_lsum_splits_on_newlines():
    # ref  = "big cat sat\nred dog ran", pred = the same two sentences swapped.
    # Whole-text tokens: ref [big cat sat red dog ran], pred [red dog ran big cat sat]
    # rouge1: all 6 unigrams shared -> 100
    # rouge2: ref {big cat, cat sat, sat red, red dog, dog ran}
    #         pred {red dog, dog ran, ran big, big cat, cat sat}; overlap 4 of 5
    #         -> P = R = 4/5 -> 80.0
    # rougeL: LCS of the flat sequences = 3 ("big cat sat" or "red dog ran")
    #         -> P = R = 3/6 -> 50.0
    # rougeLsum (summary-level union LCS over newline-split sentences):
    #   ref sent "big cat sat": LCS with "red dog ran" = {}, with "big cat sat"
    #       = {big, cat, sat} -> union 3 hits
    #   ref sent "red dog ran": likewise 3 hits
    #   hits = 6 -> P = 6/6, R = 6/6 -> 100.0
    ref = "big cat sat\nred dog ran"
    pred = "red dog ran\nbig cat sat"
    result = rouge([pred], [ref])
    assert result["rouge1"] == pytest.approx(100.0, abs=1e-9)
    assert result["rouge2"] == pytest.approx(80.0, abs=1e-9)
    assert result["rougeL"] == pytest.approx(50.0, abs=1e-9)
    assert result["rougeLsum"] == pytest.approx(100.0, abs=1e-9)


def test_rouge_lsum_without_newlines_is_one_sentence():
    # Same sentences separated by ". " instead of "\n": no sentence split
    # (no nltk splitting), so each text is one sentence and rougeLsum equals
    # rougeL: LCS 3 of 6 tokens -> 50.0
    result = rouge(["red dog ran. big cat sat"], ["big cat sat. red dog ran"])
    assert result["rougeL"] == pytest.approx(50.0, abs=1e-9)
    assert result["rougeLsum"] == pytest.approx(50.0, abs=1e-9)


def test_rouge_uses_stemmer():
    # Porter stemming (words > 3 chars): "cats" -> "cat", "runs" -> "run",
    # "running" -> "run"; so pred [cat, run] == ref [cat, run] -> rouge1 100.
    # Without stemming overlap would be 0 -> 0.
    result = rouge(["cats running"], ["cat runs"])
    assert result["rouge1"] == pytest.approx(100.0, abs=1e-9)


def test_rouge_errors():
    with pytest.raises(ValueError, match="same length"):
        rouge(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        rouge([], [])


# --------------------------------------------------------------------------- #
# BLEU / chrF (sacreBLEU defaults: 13a tokenisation, corpus level).
# No punctuation in these sentences, so 13a tokens == whitespace tokens.
# --------------------------------------------------------------------------- #
def test_bleu_identical_is_100():
    # all n-gram precisions 1, hyp len == ref len -> BP = 1 -> BLEU 100; chrF 100
    sent = "the quick brown fox jumps over the lazy dog"
    result = bleu([sent], [sent])
    assert result["bleu"] == pytest.approx(100.0, abs=1e-9)
    assert result["chrf"] == pytest.approx(100.0, abs=1e-9)


def test_bleu_hand_computed_precisions():
    # hyp: the cat sat on the mat   (6 tokens)
    # ref: the cat sat on a mat     (6 tokens)
    # p1: hyp unigrams the x2, cat, sat, on, mat; ref has "the" once -> clip
    #     matches = 1 + 1 + 1 + 1 + 1 = 5 of 6        -> p1 = 5/6
    # p2: hyp {the cat, cat sat, sat on, on the, the mat}; ref has
    #     {the cat, cat sat, sat on, on a, a mat}  -> 3 of 5 -> p2 = 3/5
    # p3: hyp {the cat sat, cat sat on, sat on the, on the mat}; matches
    #     {the cat sat, cat sat on}                -> 2 of 4 -> p3 = 1/2
    # p4: hyp {the cat sat on, cat sat on the, sat on the mat}; matches
    #     {the cat sat on}                         -> 1 of 3 -> p4 = 1/3
    # BP = 1 (6 == 6)
    # BLEU = (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** 0.25 = 0.537285 -> 53.73
    expected = 100 * (1 / 12) ** 0.25
    assert expected == pytest.approx(53.7285, abs=1e-3)
    result = bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    assert result["bleu"] == pytest.approx(expected, abs=1e-2)


def test_bleu_hand_computed_brevity_penalty():
    # hyp: the cat sat on the        (5 tokens, a prefix of the reference)
    # ref: the cat sat on the mat    (6 tokens)
    # p1 = 5/5, p2 = 4/4, p3 = 3/3, p4 = 2/2 -> geometric mean 1
    # BP = exp(1 - ref_len/hyp_len) = exp(1 - 6/5) = exp(-0.2) = 0.818731
    # BLEU = 81.87
    expected = 100 * math.exp(-0.2)
    assert expected == pytest.approx(81.8731, abs=1e-3)
    result = bleu(["the cat sat on the"], ["the cat sat on the mat"])
    assert result["bleu"] == pytest.approx(expected, abs=1e-2)


def test_bleu_is_corpus_level():
    # The two pairs above as one corpus: n-gram counts are summed, not averaged.
    # matches/totals: p1 = (5+5)/(6+5) = 10/11, p2 = (3+4)/(5+4) = 7/9,
    #                 p3 = (2+3)/(4+3) = 5/7,   p4 = (1+2)/(3+2) = 3/5
    # product = 10/11 * 7/9 * 5/7 * 3/5 = 30/99 = 10/33
    # hyp len 6+5 = 11, ref len 6+6 = 12 -> BP = exp(1 - 12/11) = exp(-1/11)
    # BLEU = exp(-1/11) * (10/33) ** 0.25 = 0.913101 * 0.741945 = 0.677470 -> 67.75
    expected = 100 * math.exp(-1 / 11) * (10 / 33) ** 0.25
    assert expected == pytest.approx(67.7470, abs=1e-3)
    # mean of the sentence scores would be (53.73 + 81.87) / 2 = 67.80 (differs)
    result = bleu(
        ["the cat sat on the mat", "the cat sat on the"],
        ["the cat sat on a mat", "the cat sat on the mat"],
    )
    assert result["bleu"] == pytest.approx(expected, abs=1e-2)


def test_bleu_disjoint_is_0():
    # no n-gram of any order matches -> BLEU 0; no shared character -> chrF 0
    result = bleu(["abc def ghi jkl"], ["mno pqr stu vwx"])
    assert result["bleu"] == pytest.approx(0.0, abs=1e-9)
    assert result["chrf"] == pytest.approx(0.0, abs=1e-9)


def test_bleu_signature():
    result = bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    sig = result["signature"]
    assert isinstance(sig, str)
    assert "tok:13a" in sig
    assert "nrefs:1" in sig
    assert set(result) == {"bleu", "chrf", "signature"}


def test_bleu_errors():
    with pytest.raises(ValueError, match="same length"):
        bleu(["a b"], [])
    with pytest.raises(ValueError, match="empty"):
        bleu([], [])


# --------------------------------------------------------------------------- #
# strict exact match
# --------------------------------------------------------------------------- #
def test_strict_exact_match_does_not_normalise():
    # SQuAD's EM drops the articles, leaving "cat" on both sides; the strict one compares the strings.
    assert exact_match(["the a cat"], [["cat a the"]]) == 100.0
    assert exact_match(["The cat!"], [["cat"]]) == 100.0
    assert strict_exact_match(["The cat!"], [["cat"]]) == 0.0
    assert strict_exact_match(["the a cat"], [["cat a the"]]) == 0.0
    # max over the references, mean over examples: (1 + 0) / 2
    assert strict_exact_match(["cat a the", "x"], [["no", "cat a the"], "y"]) == 50.0
    with pytest.raises(ValueError, match="same length"):
        strict_exact_match(["a"], [])


# --------------------------------------------------------------------------- #
# Task.score: each task's own metric
# --------------------------------------------------------------------------- #
def test_score_qna():
    # EM: "red ball" vs ["a red ball"] -> "red ball" == "red ball" -> 100
    # F1: identical tokens -> 100
    result = TASKS["qna"].score(["red ball"], [["a red ball"]])
    assert result == {"exact_match": 100.0, "f1": pytest.approx(100.0)}


def test_score_sum():
    result = TASKS["sum"].score(["the cat sat"], [["the cat ran"]])
    assert set(result) == ROUGE_KEYS
    assert result["rouge1"] == pytest.approx(200 / 3, abs=1e-2)  # P = R = 2/3


def test_score_tx():
    result = TASKS["tx"].score(["the cat sat on the"], [["the cat sat on the mat"]])
    assert set(result) == {"bleu", "chrf", "signature"}
    assert result["bleu"] == pytest.approx(100 * math.exp(-0.2), abs=1e-2)  # BP only


def test_score_errors():
    with pytest.raises(ValueError, match="unknown task"):
        get_task("classification")
    for task in TASKS.values():
        with pytest.raises(ValueError, match="same length"):
            task.score(["a"], [["a"], ["b"]])
