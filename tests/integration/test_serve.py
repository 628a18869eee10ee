"""scripts/serve.py for real: a subprocess on a free localhost port with the session's three smoke prompts,
driven with the official openai client and raw HTTP (httpx). Outputs equal generate.py's, mixed-task batches
equal requests served alone, streams join to the same text, bad requests get 4xx JSON errors and the server
keeps serving, SIGTERM drains, and a bad prompt folder stops the start in one line (exit 2)."""

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import OpenAI
from serving_support import TASKS, Server, expected_outputs, prompt_dirs, sample_inputs

from conftest import run_script

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(smoke_overrides):
    pairs = sample_inputs(smoke_overrides)
    return pairs, expected_outputs(smoke_overrides, pairs)


@pytest.fixture(scope="module")
def server(smoke_overrides):
    # A long wait so that concurrent requests surely share a batch; a small body limit to test 413.
    srv = Server(prompt_dirs(smoke_overrides), "--max-wait-ms", "300", "--max-body-bytes", "65536")
    yield srv
    assert srv.stop() == 0, srv.output()


def _body(task, record):
    return {"model": task, "input": record}


def test_the_openai_client_gets_generates_outputs(server, inputs):
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert sorted(m.id for m in client.models.list()) == sorted(TASKS)
    pairs, expected = inputs
    got = []
    for task, record in pairs:
        if task == "sum":  # a text fills the task's body field, here the article
            got.append(client.completions.create(model=task, prompt=record["article"]).choices[0].text)
        else:
            reply = client.completions.create(model=task, prompt=None, extra_body=_body(task, record))
            got.append(reply.choices[0].text)
    assert got == expected
    assert len(set(expected)) > 3  # different inputs, different outputs: the prompts are not ignored


def test_mixed_task_batches_equal_requests_served_alone(server, inputs):
    pairs, expected = inputs
    before = httpx.get(server.url + "/health").json()["batches"]
    with ThreadPoolExecutor(len(pairs)) as pool:
        post = lambda p: httpx.post(server.url + "/v1/completions", json=_body(*p), timeout=120)  # noqa: E731
        replies = list(pool.map(post, pairs))
    assert [r.status_code for r in replies] == [200] * len(pairs)
    assert [r.json()["choices"][0]["text"] for r in replies] == expected
    batches = httpx.get(server.url + "/health").json()["batches"] - before
    assert batches < len(pairs) / 2  # they were decoded together, several tasks to a batch
    articles = [r["article"] for t, r in pairs if t == "sum"]
    many = httpx.post(server.url + "/v1/completions", json={"model": "sum", "prompt": articles}, timeout=120)
    assert [c["text"] for c in many.json()["choices"]] == [
        e for (t, _), e in zip(pairs, expected, strict=True) if t == "sum"
    ]


def test_a_stream_joins_to_the_same_text(server, inputs):
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    pairs, expected = inputs
    for (task, record), want in list(zip(pairs, expected, strict=True))[::3]:
        chunks = list(client.completions.create(model=task, prompt=None, stream=True, extra_body=_body(task, record)))
        assert "".join(c.choices[0].text for c in chunks) == want
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    with httpx.stream("POST", server.url + "/v1/completions", json={**_body(*pairs[0]), "stream": True}) as r:
        lines = [l for l in r.iter_lines() if l]
    assert r.headers["content-type"].startswith("text/event-stream") and lines[-1] == "data: [DONE]"
    assert "".join(json.loads(l[6:])["choices"][0]["text"] for l in lines[:-1]) == expected[0]


def _bad_requests(pairs):
    qna = next(r for t, r in pairs if t == "qna")
    long_article = " ".join(["tagazo huloro."] * 3000)  # ~6,000 tokens: past the context window, under 64 KiB
    post = lambda **kw: ("POST", "/v1/completions", kw)  # noqa: E731
    return {
        "unknown model": (post(json={"model": "nope", "prompt": "x"}), 404),
        "no model": (post(json={"prompt": "x"}), 400),
        "missing field": (post(json={"model": "qna", "input": {"context": qna["context"]}}), 400),
        "a text where a record is needed": (post(json={"model": "qna", "prompt": "only a context"}), 400),
        "no input at all": (post(json={"model": "sum"}), 400),
        "non-UTF-8 bytes": (post(content=b'{"model": "sum", "prompt": "\xff\xfe"}'), 400),
        "not JSON": (post(content=b'{"model": "sum",'), 400),
        "oversized body": (post(json={"model": "sum", "prompt": "a" * 70000}), 413),
        "max_tokens over the limit": (post(json={"model": "sum", "prompt": "x", "max_tokens": 100000}), 400),
        "negative max_tokens": (post(json={"model": "sum", "prompt": "x", "max_tokens": -3}), 400),
        "input longer than the context window": (post(json={"model": "sum", "prompt": long_article}), 400),
        "max_tokens as a string": (post(json={"model": "sum", "prompt": "x", "max_tokens": "5"}), 400),
        "prompt as a number": (post(json={"model": "sum", "prompt": 5}), 400),
        "field of the wrong type": (post(json={"model": "qna", "input": {"context": 1, "question": "q"}}), 400),
        "too many inputs": (post(json={"model": "sum", "prompt": ["x"] * 17}), 400),
        "an option not implemented": (post(json={"model": "sum", "prompt": "x", "n": 2}), 400),
        "an unknown option": (post(json={"model": "sum", "prompt": "x", "frobnicate": 1}), 400),
        "a path for a model": (post(json={"model": "../../etc/passwd", "prompt": "x"}), 404),
        "no such route": (("GET", "/v1/nothing", {}), 404),
    }


def test_every_bad_request_gets_a_4xx_json_error_and_the_server_keeps_serving(server, inputs):
    pairs, expected = inputs
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for name, ((method, path, kw), status) in _bad_requests(pairs).items():
            r = http.request(method, path, **kw)
            assert r.status_code == status, (name, r.text)
            assert isinstance(r.json()["error"]["message"], str) and r.json()["error"]["message"], name
        good = http.post("/v1/completions", json=_body(*pairs[0]))
    assert good.status_code == 200 and good.json()["choices"][0]["text"] == expected[0]


def test_a_client_that_leaves_mid_stream_does_not_hurt_the_server(server, inputs):
    pairs, expected = inputs
    body = {"model": "sum", "prompt": next(r for t, r in pairs if t == "sum")["article"], "stream": True}
    for _ in range(3):
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
            next(r.iter_lines())  # the first event, then hang up
    good = httpx.post(server.url + "/v1/completions", json=_body(*pairs[0]), timeout=60)
    assert good.status_code == 200 and good.json()["choices"][0]["text"] == expected[0]


def test_sigterm_finishes_the_requests_in_flight_then_exits_0(smoke_overrides, inputs):
    """On a server with an API key (from SOFTPROMPT_API_KEY): without it, 401; with it, answers; SIGTERM drains."""
    pairs, expected = inputs
    # A 5 s wait: the requests are surely all in and waiting for their batch when SIGTERM comes.
    srv = Server({"sum": prompt_dirs(smoke_overrides)["sum"]}, "--max-wait-ms", "5000", env={"SOFTPROMPT_API_KEY": "k"})
    sums = [(p, e) for p, e in zip(pairs, expected, strict=True) if p[0] == "sum"]
    refused = httpx.post(srv.url + "/v1/completions", json=_body(*sums[0][0]), timeout=60)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    replies = []
    key = {"Authorization": "Bearer k"}
    send = lambda p: replies.append(  # noqa: E731
        httpx.post(srv.url + "/v1/completions", json=_body(*p), headers=key, timeout=120)
    )
    threads = [threading.Thread(target=send, args=(p,)) for p, _ in sums]
    try:
        for t in threads:
            t.start()
        for _ in range(100):  # until the server holds them all (at most 10 s)
            if httpx.get(srv.url + "/health").json()["in_flight"] == len(sums):
                break
            time.sleep(0.1)
        assert httpx.get(srv.url + "/health").json()["in_flight"] == len(sums)
    finally:
        status = srv.stop()  # SIGTERM while they wait for their batch
    assert status == 0, srv.output()
    for t in threads:
        t.join(10)
    assert sorted(r.json()["choices"][0]["text"] for r in replies) == sorted(e for _, e in sums)


def test_a_bad_prompt_folder_stops_the_start_in_one_line(smoke_overrides, tmp_path):
    run = prompt_dirs(smoke_overrides)["sum"]
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    ckpt = max(broken.glob("epoch_*"))
    (ckpt / "prompt.safetensors").write_bytes((ckpt / "prompt.safetensors").read_bytes()[:-8] + b"\0" * 8)
    cases = {
        "does not match its recorded SHA-256": f"sum={ckpt}",
        "not a training checkpoint": f"sum={tmp_path}",
        "expected NAME=FOLDER": str(run),
        "use letters, digits": f"../x={run}",
    }
    for message, spec in cases.items():
        proc = run_script("serve.py", "--prompt", spec, "--port", "9")
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
