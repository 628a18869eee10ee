"""The load test: 500 requests from 16 concurrent clients, mixed tasks, every fourth streaming, against one
server. Every answer equals generate.py's for its input, none is lost, and the server's memory stays flat."""

import json
import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serving_support import Server, expected_outputs, prompt_dirs, sample_inputs

pytestmark = pytest.mark.slow

REQUESTS, CLIENTS = 500, 16


def _ask(url: str, task: str, record: dict, stream: bool, http: httpx.Client) -> str:
    body = {"model": task, "input": record, "stream": stream}
    if not stream:
        r = http.post(url + "/v1/completions", json=body)
        r.raise_for_status()
        return r.json()["choices"][0]["text"]
    with http.stream("POST", url + "/v1/completions", json=body) as r:
        r.raise_for_status()
        events = [l[6:] for l in r.iter_lines() if l.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])


def test_500_mixed_requests_from_16_clients_all_correct_none_lost_memory_flat(smoke_overrides):
    pairs = sample_inputs(smoke_overrides, per_task=6)
    expected = expected_outputs(smoke_overrides, pairs)
    plan = [random.Random(i).randrange(len(pairs)) for i in range(REQUESTS)]
    srv = Server(prompt_dirs(smoke_overrides), "--max-wait-ms", "5")
    answers: list = [None] * REQUESTS
    rss = []

    def client(k: int) -> None:
        with httpx.Client(timeout=300) as http:
            for i in range(k, REQUESTS, CLIENTS):
                task, record = pairs[plan[i]]
                answers[i] = _ask(srv.url, task, record, stream=i % 4 == 0, http=http)
                if k == 0 and i % (CLIENTS * 8) == 0:
                    rss.append(srv.rss_kb())

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(client, range(CLIENTS)))  # re-raises a client's failure
        rss.append(srv.rss_kb())
    finally:
        assert srv.stop() == 0, srv.output()
    assert sum(a is not None for a in answers) == REQUESTS  # none lost
    wrong = [i for i in range(REQUESTS) if answers[i] != expected[plan[i]]]
    assert not wrong, f"{len(wrong)} wrong answers, e.g. request {wrong[0]}"
    # Flat: after the first quarter (caches and allocator pools warmed up), growth stays under 10%.
    warm = rss[len(rss) // 4]
    assert rss[-1] < warm * 1.10, rss
