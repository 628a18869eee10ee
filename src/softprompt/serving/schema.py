"""What a completion request may hold, its limits, and the JSON errors the server answers with.

    POST /v1/completions  {"model": "sum", "prompt": "an article ...", "max_tokens": 32}
                          {"model": "qna", "input": {"context": "...", "question": "..."}, "stream": true}

`model` names a served prompt. The inputs are either `prompt` (a text or a list of texts: each fills the task's
body field, as generate.py --text does) or `input` (a record or a list of records with the task's fields); a
list is a batch of choices, at most Limits.max_inputs. Greedy unless `temperature` > 0. OpenAI options this
server does not implement (n > 1, best_of, echo, logprobs, stop, suffix, penalties, logit_bias) are refused
with a 400 naming the option, never silently ignored. Every error is a 4xx with OpenAI's JSON shape:
{"error": {"message": ..., "type": "invalid_request_error", "param": ..., "code": ...}}.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


@dataclasses.dataclass(frozen=True)
class Limits:
    """Request limits (serve.py flags); a request past one gets a 4xx naming it."""

    max_body_bytes: int = 1 << 20
    """Largest request body (413 past it)."""
    max_inputs: int = 16
    """Most inputs (choices) in one request."""

    def __post_init__(self) -> None:
        bad = [f"{k} must be at least 1, got {v}" for k, v in dataclasses.asdict(self).items() if v < 1]
        if bad:
            raise ValueError("; ".join(bad))


class ApiError(Exception):
    """A request the server refuses: HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        kind = {401: "authentication_error", 404: "not_found_error", 413: "request_too_large"}
        error_type = kind.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": error_type, "param": self.param, "code": self.code}}


class CompletionRequest(BaseModel):
    """The body of POST /v1/completions (strict types: "5" is no integer)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    prompt: str | list[str] | None = None
    input: dict[str, Any] | list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    # OpenAI options accepted only at their neutral value (see UNSUPPORTED).
    n: int | None = None
    best_of: int | None = None
    echo: bool | None = None
    logprobs: int | None = None
    stop: str | list[str] | None = None
    suffix: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None


UNSUPPORTED = {"n": 1, "best_of": 1, "echo": False, "logprobs": None, "stop": None, "suffix": None}
UNSUPPORTED |= {"presence_penalty": 0, "frequency_penalty": 0, "logit_bias": None}
"""Options and the one value of each this server takes (null is always taken)."""


def parse_request(raw: bytes) -> CompletionRequest:
    """The request from its body bytes, or an ApiError saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(400, f"the request body is not UTF-8 text (byte {err.start + 1})") from err
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ApiError(400, f"the request body is not valid JSON ({str(err).splitlines()[0]})") from err
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        req = CompletionRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise ApiError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param) from err
    for name, neutral in UNSUPPORTED.items():
        value = getattr(req, name)
        if value is not None and value != neutral and not (name == "logit_bias" and value == {}):
            raise ApiError(400, f"{name} {value!r} is not supported by this server", param=name)
    _check_numbers(req)
    return req


def _check_numbers(req: CompletionRequest) -> None:
    if req.max_tokens is not None and req.max_tokens < 1:
        raise ApiError(400, f"max_tokens must be at least 1, got {req.max_tokens}", param="max_tokens")
    if req.temperature is not None and not 0 <= req.temperature <= 2:
        raise ApiError(400, f"temperature must lie in [0, 2], got {req.temperature}", param="temperature")
    if req.top_p is not None and not 0 < req.top_p <= 1:
        raise ApiError(400, f"top_p must lie in (0, 1], got {req.top_p}", param="top_p")
    if (req.prompt is None) == (req.input is None):
        raise ApiError(400, "give either prompt (text) or input (the task's fields), not both or neither")


def inputs_of(req: CompletionRequest, limits: Limits) -> list[Any]:
    """The request's inputs as a list (texts or records), at most limits.max_inputs and at least one."""
    given = req.prompt if req.prompt is not None else req.input
    items = given if isinstance(given, list) else [given]
    param = "prompt" if req.prompt is not None else "input"
    if not items:
        raise ApiError(400, f"{param} is an empty list", param=param)
    if len(items) > limits.max_inputs:
        raise ApiError(400, f"{len(items)} inputs in one request; at most {limits.max_inputs}", param=param)
    return items
