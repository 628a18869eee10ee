"""The HTTP app: OpenAI-compatible completions over one frozen base and many named prompts.

    app = create_app(Service(served, batcher, tokenizer, Limits(), api_key=None))
    POST /v1/completions   {"model": "sum", "prompt": "..."}  -> OpenAI's text_completion (or SSE with stream)
    GET  /v1/models        the served prompts (task, input fields, limits, SHA-256)
    GET  /health           {"status": "ok", ...}, without the API key

Each input becomes one job for the decoder thread (batcher.py), formatted exactly as generate.py formats it
(the task's template, the prompt's source budget: a longer body is cut as training and evaluation cut it). An
input longer than the context window is refused (400). A request names a prompt; nothing in a request reaches
the filesystem.
With an API key set, every /v1 call needs `Authorization: Bearer <key>` (the openai client's api_key).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import sys
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data import encode_source
from ..errors import SoftPromptError
from ..generate import Sampling, as_record
from .batcher import Batcher, Delta, Done, Job
from .prompts import ServedPrompt
from .schema import ApiError, CompletionRequest, Limits, inputs_of, parse_request


@dataclasses.dataclass
class Service:
    """What the app serves with."""

    served: dict[str, ServedPrompt]
    batcher: Batcher
    tokenizer: Any
    limits: Limits = dataclasses.field(default_factory=Limits)
    api_key: str | None = None
    announce: str | None = None
    """A line printed to stderr once the app has started (serve.py: where it listens)."""
    in_flight: int = 0
    """Completion requests accepted and not yet answered (streams until their last event)."""


def create_app(service: Service) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if service.announce:
            print(service.announce, file=sys.stderr, flush=True)
        yield
        # Shutdown comes after uvicorn has let the requests in flight finish: the queue is empty by now.
        await run_in_threadpool(service.batcher.close)

    app = FastAPI(title="softprompt", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(ApiError, lambda r, e: JSONResponse(e.body(), status_code=e.status))
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, lambda r, e: JSONResponse(ApiError(500, "internal error").body(), 500))

    @app.get("/health")
    async def health():
        batches = service.batcher.batches
        return {"status": "ok", "prompts": list(service.served), "batches": batches, "in_flight": service.in_flight}

    @app.get("/v1/models")
    async def models(request: Request):
        _check_key(request, service.api_key)
        return {"object": "list", "data": [p.card() for p in service.served.values()]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        _check_key(request, service.api_key)
        req = parse_request(await _read_body(request, service.limits.max_body_bytes))
        prompt = service.served.get(req.model)
        if prompt is None:
            names = ", ".join(service.served)
            raise ApiError(404, f"no prompt named {req.model!r}; this server has {names}", "model", "model_not_found")
        jobs = await run_in_threadpool(_jobs, req, prompt, service)
        return await _respond(req, prompt, jobs, service)

    return app


def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(ApiError(err.status_code, str(err.detail)).body(), status_code=err.status_code)


def _check_key(request: Request, key: str | None) -> None:
    if key is None:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
        raise ApiError(401, "missing or wrong API key (send Authorization: Bearer <key>)", code="invalid_api_key")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes (by its Content-Length, or as it arrives)."""
    declared = request.headers.get("content-length")
    too_big = ApiError(413, f"the request body is larger than {limit} bytes")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _jobs(req: CompletionRequest, prompt: ServedPrompt, service: Service) -> list[Job]:
    """One job per input, formatted as generate.py formats it; an ApiError for the first bad one."""
    items = inputs_of(req, service.limits)
    param = "prompt" if req.prompt is not None else "input"
    limit = req.max_tokens if req.max_tokens is not None else prompt.max_tokens
    if limit > prompt.max_tokens:
        raise ApiError(400, f"max_tokens {limit} is more than {prompt.max_tokens}, this prompt's limit", "max_tokens")
    sampling = Sampling(req.temperature, req.top_p or 1.0, req.seed or 0) if req.temperature else None
    task, tokenizer, jobs = prompt.cfg.task, service.tokenizer, []
    for i, item in enumerate(items):
        where = f"{param}[{i}]" if len(items) > 1 else param
        try:
            record = as_record(task, item)
        except SoftPromptError as err:
            raise ApiError(400, f"{where}: {err}", param=where) from err
        source, cut = encode_source(record, task, tokenizer, prompt.budget)
        # Cut to the budget as training and generate.py cut it; refused only past the whole context window.
        n = len(encode_source(record, task, tokenizer, 1 << 30)[0]) if cut else len(source)
        if n + prompt.prompt.shape[0] > prompt.window:
            raise ApiError(
                400,
                f"{where} is {n} tokens long; with prompt {prompt.name!r} it does not fit the {prompt.window}-token "
                f"context window (inputs up to {prompt.budget} tokens are read whole, longer ones cut as in training)",
                param=where,
                code="context_length_exceeded",
            )
        jobs.append(Job(prompt.name, source, limit, listener=None, stream=req.stream, sampling=sampling))
    return jobs


async def _respond(req: CompletionRequest, prompt: ServedPrompt, jobs: list[Job], service: Service):
    """Queue the jobs; the whole completion as JSON, or its server-sent events with stream: true."""
    loop, events = asyncio.get_running_loop(), asyncio.Queue()
    service.in_flight += 1
    for i, job in enumerate(jobs):
        job.listener = lambda event, i=i: loop.call_soon_threadsafe(events.put_nowait, (i, event))
        service.batcher.submit(job)
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time())}
    head["model"] = prompt.name
    if req.stream:
        return StreamingResponse(_stream(head, jobs, events, service), media_type="text/event-stream")
    done: dict[int, Done] = {}
    try:
        while len(done) < len(jobs):
            i, event = await events.get()
            if isinstance(event, Done):
                done[i] = event
    finally:
        service.in_flight -= 1
        for job in jobs:  # a cancelled request (its client gone) stops its rows
            job.cancelled = True
    failed = next((d.error for d in done.values() if d.error), None)
    if failed:
        raise ApiError(500, f"decoding failed: {failed}")
    choices = [_choice(i, done[i].text, done[i].finish_reason) for i in range(len(jobs))]
    new_tokens = sum(d.tokens for d in done.values())
    prompt_tokens = sum(len(j.source) for j in jobs)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": new_tokens}
    return {**head, "choices": choices, "usage": {**usage, "total_tokens": prompt_tokens + new_tokens}}


def _choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}


async def _stream(head: dict[str, Any], jobs: list[Job], events: asyncio.Queue, service: Service):
    """Server-sent events as OpenAI sends them: a chunk per new text, one with the finish reason, [DONE]."""
    sse = lambda body: f"data: {json.dumps(body, ensure_ascii=False)}\n\n"  # noqa: E731
    try:
        left = len(jobs)
        while left:
            i, event = await events.get()
            if isinstance(event, Delta):
                yield sse({**head, "choices": [_choice(i, event.text, None)]})
                continue
            left -= 1
            if event.error:
                yield sse(ApiError(500, f"decoding failed: {event.error}").body())
                return
            yield sse({**head, "choices": [_choice(i, "", event.finish_reason)]})
        yield "data: [DONE]\n\n"
    finally:
        service.in_flight -= 1
        for job in jobs:  # the client may have gone mid-stream: its rows stop at the next step
            job.cancelled = True
