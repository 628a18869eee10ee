"""The server's request checks, in process and without a model: each bad body is an ApiError with its status,
OpenAI's error shape and the parameter named."""

import json

import pytest

from softprompt.serving.schema import ApiError, Limits, inputs_of, parse_request


def _err(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_request(raw)
    return info.value


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (b"\xff{}", None, "not UTF-8"),
        (b'{"model": "sum",', None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b'{"prompt": "x"}', "model", "Field required"),
        (b'{"model": "sum", "prompt": "x", "max_tokens": "5"}', "max_tokens", "valid integer"),
        (b'{"model": "sum", "prompt": "x", "max_tokens": -1}', "max_tokens", "at least 1"),
        (b'{"model": "sum", "prompt": "x", "temperature": 9}', "temperature", "[0, 2]"),
        (b'{"model": "sum", "prompt": "x", "n": 3}', "n", "not supported"),
        (b'{"model": "sum", "prompt": "x", "stop": ["\\n"]}', "stop", "not supported"),
        (b'{"model": "sum", "prompt": "x", "colour": 1}', "colour", "Extra inputs"),
        (b'{"model": "sum"}', None, "either prompt"),
        (b'{"model": "sum", "prompt": "x", "input": {"article": "y"}}', None, "either prompt"),
    ],
)
def test_a_bad_body_is_a_400_naming_what_is_wrong(body, param, words):
    err = _err(body)
    assert err.status == 400 and err.param == param and words in err.message
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}
    json.dumps(err.body())  # JSON-ready


def test_good_bodies_and_the_inputs_limit():
    req = parse_request(b'{"model": "sum", "prompt": ["a", "b"], "max_tokens": 4, "n": 1, "stop": null}')
    assert inputs_of(req, Limits()) == ["a", "b"]
    req = parse_request(json.dumps({"model": "qna", "input": {"context": "c", "question": "q"}}).encode())
    assert inputs_of(req, Limits()) == [{"context": "c", "question": "q"}]
    with pytest.raises(ApiError, match="3 inputs in one request; at most 2"):
        inputs_of(parse_request(b'{"model": "sum", "prompt": ["a", "b", "c"]}'), Limits(max_inputs=2))
    with pytest.raises(ApiError, match="empty list"):
        inputs_of(parse_request(b'{"model": "sum", "prompt": []}'), Limits())
