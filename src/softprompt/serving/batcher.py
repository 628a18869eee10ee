"""The decoder thread: requests queue up, and are decoded together in mixed-prompt batches.

    batcher = Batcher(engine, max_batch=16, max_wait_s=0.01)
    job = Job("sum", source_ids, limit=40, listener=print)   # listener(event) from the decoder thread
    batcher.submit(job)                                        # events: Delta(text) while streaming, then Done
    batcher.close()                                            # finish what is queued, then stop the thread

One thread owns the model. It takes the oldest waiting job, waits at most max_wait_s for more (up to
max_batch), and splits what it has into batches with generation.mixed_batches (each row needs room in the
context window for the batch's longest token limit), then decodes each batch in one Hugging Face generate call
through MultiPromptModel: row i reads its own prompt after its own left padding, as evaluation's mixed pass
does. Rows are independent (the padding is masked and the positions come from the mask), so a row's greedy
output is the one it gets alone.

A row stops on its own (EOS, its token limit, the first newline of a task that stops there, or its client gone):
a stopping criterion marks it done and answers its request at once (a one-word qna answer does not wait for the
summaries in its batch); from then on Hugging Face feeds it padding while the others go on.
Finished rows are not removed from the batch and new requests do not join one mid-way (no continuous batching):
they wait for the next batch. A job with temperature > 0 is decoded alone, seeded first (as generate.py does).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..data import generation_batch
from ..devices import autocast
from ..generate import Sampling
from ..generation import decode_tokens, mixed_batches
from ..hub import context_window


@dataclasses.dataclass
class Delta:
    """New text of a streaming row (what its stream has not yet sent)."""

    text: str


@dataclasses.dataclass
class Done:
    """A row's whole prediction, why it stopped (stop or length) and its token count; error: it failed."""

    text: str
    finish_reason: str
    tokens: int
    error: str | None = None


@dataclasses.dataclass(eq=False)
class Job:
    """One input to decode with the prompt `name`; listener(Delta | Done) is called from the decoder thread."""

    name: str
    source: list[int]
    limit: int
    listener: Callable[[Any], None]
    stream: bool = False
    sampling: Sampling | None = None
    cancelled: bool = False
    """Set when its client has gone: the row stops at the next step."""
    sent: str = ""
    """The text streamed so far (streaming rows)."""


@dataclasses.dataclass
class Engine:
    """What the decoder thread decodes with: the multi-prompt model, its tokenizer, each prompt's task."""

    multi: Any
    tokenizer: Any
    tasks: dict[str, Any]
    """{prompt name: Task}"""
    precision: Any

    @property
    def device(self) -> torch.device:
        return self.multi.prompts.device


class _RowWatch(StoppingCriteria):
    """Per-row stopping and streaming, called by generate after each step with the new tokens so far [B, t]."""

    def __init__(self, engine: Engine, jobs: list[Job]):
        self.engine, self.jobs = engine, jobs
        self.done = [False] * len(jobs)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        eos = self.engine.tokenizer.eos_token_id
        rows = input_ids.tolist()
        for i, (job, ids) in enumerate(zip(self.jobs, rows, strict=True)):
            if self.done[i]:
                continue
            task = self.engine.tasks[job.name]
            raw = self.engine.tokenizer.decode(ids if ids[-1] != eos else ids[:-1], skip_special_tokens=True)
            stop = ids[-1] == eos or len(ids) >= job.limit or job.cancelled
            # The text before a first newline is final (later tokens only add bytes after it).
            stop = stop or (task.stop_at_newline and "\n" in raw)
            self.done[i] = stop
            if stop:  # answered now, not when the batch's longest row ends: its tokens are final
                _finish(self.engine, job, ids)
            elif job.stream:
                _stream(job, decode_tokens(ids, self.engine.tokenizer, eos, task.stop_at_newline))
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def _stream(job: Job, text: str) -> None:
    """Send what is new in `text`, holding back a trailing half of a character (shown as U+FFFD)."""
    text = text.rstrip("\ufffd")
    if len(text) > len(job.sent) and text.startswith(job.sent):
        job.listener(Delta(text[len(job.sent) :]))
        job.sent = text


def _finish(engine: Engine, job: Job, ids: list[int]) -> None:
    eos = engine.tokenizer.eos_token_id
    ids = ids[: job.limit]
    stopped = eos in ids
    n = ids.index(eos) if stopped else len(ids)
    task = engine.tasks[job.name]
    text = decode_tokens(ids, engine.tokenizer, eos, task.stop_at_newline)
    newline = task.stop_at_newline and "\n" in engine.tokenizer.decode(ids[:n], skip_special_tokens=True)
    if job.stream and text.startswith(job.sent) and len(text) > len(job.sent):
        job.listener(Delta(text[len(job.sent) :]))
        job.sent = text
    job.listener(Done(text, "stop" if stopped or newline else "length", n))


def decode_batch(engine: Engine, jobs: list[Job]) -> None:
    """Decode one batch of jobs (greedy, or one sampled job alone) and tell each listener."""
    tok = engine.tokenizer
    batch = {k: v.to(engine.device) for k, v in generation_batch([j.source for j in jobs], tok.pad_token_id).items()}
    kwargs = dict(max_new_tokens=max(j.limit for j in jobs), eos_token_id=tok.eos_token_id)
    watch = _RowWatch(engine, jobs)
    kwargs |= dict(pad_token_id=tok.pad_token_id, stopping_criteria=StoppingCriteriaList([watch]))
    sampling = jobs[0].sampling
    if sampling is not None and not sampling.greedy:
        kwargs |= dict(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        torch.manual_seed(sampling.seed)
    else:
        kwargs |= dict(do_sample=False, num_beams=1)
    with autocast(engine.device, engine.precision):
        new = engine.multi.generate(batch["input_ids"], batch["attention_mask"], tasks=[j.name for j in jobs], **kwargs)
    for job, row, done in zip(jobs, new.tolist(), watch.done, strict=True):
        if not done:  # every row stops by its limit at the last step; this is the safety net
            _finish(engine, job, row)


def plan(engine: Engine, jobs: list[Job], max_batch: int) -> list[list[Job]]:
    """The batches to decode `jobs` in: sampled jobs alone, greedy ones by generation.mixed_batches."""
    greedy = [j for j in jobs if j.sampling is None or j.sampling.greedy]
    window = context_window(engine.multi.base)
    lengths = engine.multi.lengths[engine.multi.task_index([j.name for j in greedy])].tolist() if greedy else []
    room = [window - p - len(j.source) for p, j in zip(lengths, greedy, strict=True)]
    batches = mixed_batches([len(j.source) for j in greedy], [j.limit for j in greedy], room, max_batch)
    return [[greedy[i] for i in b] for b in batches] + [[j] for j in jobs if j not in greedy]


class Batcher:
    """The decoder thread and its queue (see the module docstring)."""

    def __init__(self, engine: Engine, max_batch: int = 16, max_wait_s: float = 0.01):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be at least 1 and max_wait_s not negative ({max_batch}, {max_wait_s})")
        self.engine, self.max_batch, self.max_wait_s = engine, max_batch, max_wait_s
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.batches = 0
        """Batches decoded so far (for tests and the health endpoint)."""
        self.thread = threading.Thread(target=self._run, name="softprompt-decoder", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        self.queue.put(job)

    def close(self) -> None:
        """Decode what is queued, then stop the thread."""
        self.queue.put(None)
        self.thread.join()

    def _take(self) -> tuple[list[Job], bool]:
        """(the next jobs, whether to stop after them): the oldest, then what arrives within max_wait_s."""
        first = self.queue.get()
        if first is None:
            return [], True
        jobs, deadline = [first], time.monotonic() + self.max_wait_s
        while len(jobs) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _run(self) -> None:
        stop = False
        while not stop:
            jobs, stop = self._take()
            live = [j for j in jobs if not j.cancelled]
            for batch in plan(self.engine, live, self.max_batch) if live else []:
                try:
                    decode_batch(self.engine, batch)
                except Exception as err:  # a failed batch answers its requests with 500s; the server goes on
                    for job in batch:
                        job.listener(Done("", "error", 0, error=f"{type(err).__name__}: {err}"))
                self.batches += 1
            for job in jobs:
                if job.cancelled and job not in live:
                    job.listener(Done("", "cancelled", 0))
