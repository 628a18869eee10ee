"""The tasks: where their data lives, how an example becomes text, and how a prediction is scored.

Each task turns a dataset record into three source pieces and a target:

    head + body + tail  ->  target

`body` is the long part (the SQuAD context, the article, the Bulgarian
sentence) and the only one cut when the source exceeds its token budget, so a
question is never truncated. The model reads the source after the soft prompt
and learns to continue it with the target, which ends with EOS.

Everything task-specific lives on the `Task`: the metric function and the
metrics the summary line prints, whether references come several per example,
the token limit of a prediction and where a prediction stops. `TASKS` is the
one registry: configs, training, evaluation, the report and the error messages
read the task names from it, so a new task is one entry here (and a config and
its data). A task's metric is any function of (predictions, references); it
need not live in metrics.py (which also offers `strict_exact_match`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import metrics
from .errors import SoftPromptError


@dataclass(frozen=True, kw_only=True)
class Task:
    """One task. Only the fields without a default must be given; a local-only task needs no Hub id."""

    name: str
    init_words: str
    """The words model.init_text defaults to (init 'words' makes one prompt vector per word)."""
    required: tuple[str, ...]
    """Fields every record must carry (checked at load, with the file and line); `[]`: a list of strings."""
    pieces: Callable[[dict[str, Any]], tuple[str, str, str]]
    """record -> (head, body, tail) of the source."""
    target: Callable[[dict[str, Any]], str]
    """record -> the training target (without EOS)."""
    references: Callable[[dict[str, Any]], list[str]]
    """record -> the reference(s) a prediction is scored against."""
    metric: Callable[[list[str], list[Any]], dict[str, Any]]
    """(predictions, references) -> scores, e.g. metrics.rouge or a function of the task's own; see
    multi_reference for the references' form."""
    metrics: tuple[tuple[str, str], ...]
    """(key in the scores, label) of the metrics the summary line and the report print, in order."""
    headline: tuple[str, str] | None = None
    """The one of `metrics` that sums a result up (the report's bars, the ablation table), e.g. ("bleu", "BLEU");
    None: the first of `metrics`."""
    dataset: str | None = None
    """Hub dataset id; None: the task has local files only (a config must then set data.files)."""
    dataset_config: str | None = None
    """Hub dataset configuration name (e.g. 3.0.0)."""
    eval_split: str = "test"
    """The split evaluate.py scores by default (SQuAD has no test split)."""
    stop_at_newline: bool = True
    """Cut predictions at the first newline (not for summaries, whose sentences are newline-separated)."""
    multi_reference: bool = False
    """True: the metric takes a list of references per example (SQuAD's answers); False: one string each."""
    new_tokens: Callable[[int], int] = lambda max_target_tokens: max_target_tokens
    """data.max_target_tokens -> the token limit of one prediction, at most data.max_target_tokens (the room the
    source budget reserves in the context window). By default all of it: as many as a training target holds."""

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ValueError(f"task {self.name}: metrics must name at least one (key, label)")
        if self.headline is None:
            object.__setattr__(self, "headline", self.metrics[0])
        if self.headline not in self.metrics:
            raise ValueError(f"task {self.name}: headline {self.headline} is not one of its metrics {self.metrics}")

    def score(self, predictions: list[str], references: list[list[str]]) -> dict[str, Any]:
        """Scores of predictions against each example's references (as `references(record)` gives them)."""
        return self.metric(predictions, references if self.multi_reference else [r[0] for r in references])


def _squad(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    return {"exact_match": metrics.exact_match(predictions, references), "f1": metrics.f1(predictions, references)}


def _qna_pieces(r: dict[str, Any]) -> tuple[str, str, str]:
    return "Context: ", r["context"].strip(), f"\nQuestion: {r['question'].strip()}\nAnswer:"


def _qna_target(r: dict[str, Any]) -> str:
    return " " + r["answers"]["text"][0].strip()


def _sum_pieces(r: dict[str, Any]) -> tuple[str, str, str]:
    return "Article: ", r["article"].strip(), "\nSummary:"


def _tx_pieces(r: dict[str, Any]) -> tuple[str, str, str]:
    return "Bulgarian: ", r["translation"]["bg"].strip(), "\nEnglish:"


TASKS: dict[str, Task] = {
    "qna": Task(
        name="qna",
        dataset="rajpurkar/squad",
        dataset_config=None,
        eval_split="validation",
        init_words="question answer help result",
        required=("context", "question", "answers.text[]"),
        pieces=_qna_pieces,
        target=_qna_target,
        references=lambda r: [a.strip() for a in r["answers"]["text"]],
        stop_at_newline=True,
        metric=_squad,
        multi_reference=True,
        metrics=(("exact_match", "EM"), ("f1", "F1")),
        headline=("exact_match", "EM"),
    ),
    "sum": Task(
        name="sum",
        dataset="abisee/cnn_dailymail",
        dataset_config="3.0.0",
        eval_split="test",
        init_words="summarize shorten distill short",
        required=("article", "highlights"),
        pieces=_sum_pieces,
        target=lambda r: " " + r["highlights"].strip(),
        references=lambda r: [r["highlights"].strip()],
        stop_at_newline=False,
        metric=metrics.rouge,
        multi_reference=False,
        metrics=(("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"), ("rougeLsum", "ROUGE-Lsum")),
        headline=("rougeL", "ROUGE-L"),
    ),
    "tx": Task(
        name="tx",
        dataset="Helsinki-NLP/europarl",
        dataset_config="bg-en",
        eval_split="test",
        init_words="bulgarian english translation translate_bg_en",
        required=("translation.bg", "translation.en"),
        pieces=_tx_pieces,
        target=lambda r: " " + r["translation"]["en"].strip(),
        references=lambda r: [r["translation"]["en"].strip()],
        stop_at_newline=True,
        metric=metrics.bleu,
        multi_reference=False,
        metrics=(("bleu", "BLEU"), ("chrf", "chrF")),
        headline=("bleu", "BLEU"),
    ),
}


class UnknownTaskError(SoftPromptError, ValueError):
    """A task name the registry does not hold."""


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task '{name}'; tasks are {', '.join(TASKS)}") from None


def record_problem(task: Task, record: Any) -> str | None:
    """Why a record cannot be used for this task, or None if it can."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {_json_type(record)}"
    for spec in task.required:
        dotted = spec.removesuffix("[]")
        value: Any = record
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                return f"missing field '{dotted}'"
            value = value[part]
        if spec.endswith("[]"):
            if not isinstance(value, list):
                return f"field '{dotted}' must be a non-empty list of strings, got {_json_type(value)}"
            if not value:
                return f"field '{dotted}' must be a non-empty list of strings, got an empty array"
            odd = [v for v in value if not isinstance(v, str)]
            if odd:
                return (
                    f"field '{dotted}' must be a non-empty list of strings, got an array holding {_json_type(odd[0])}"
                )
            continue
        if not isinstance(value, str):
            return f"field '{dotted}' must be a string, got {_json_type(value)}"
    if not task.target(record).strip():
        return "empty target text"
    return None


def _json_type(value: Any) -> str:
    """A value's type as JSON names it (a list is an array, a dict an object, None null)."""
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)
