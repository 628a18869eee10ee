"""The serving benchmark: one multi-prompt server against the same server unbatched and three single-task servers.

    results = run_serve_bench({"qna": "checkpoints/smoke-qna", ...}, clients=(1, 4, 16), out="results")

Every setup is real: scripts/serve.py processes on free localhost ports, driven by N client threads that each
send one request after another (raw HTTP, greedy, a fixed mix cycling over the tasks and their first test
records). Per setup and N: requests/s over the whole run, p50/p95 latency of a request, and the resident
memory (VmRSS) of the server processes after it (summed over the three single-task ones). Every answer is
checked against the multi-prompt server's answer for the same request, so a setup that is fast and wrong shows.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """scripts/serve.py in a subprocess on a free localhost port; ready once /health answers."""

    def __init__(self, prompts: dict[str, Path], *flags: str, env: dict | None = None, log: Path, timeout=240):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [a for name, path in prompts.items() for a in ("--prompt", f"{name}={path}")]
        cmd = [sys.executable, str(ROOT / "scripts/serve.py"), *args, "--port", str(self.port), *flags]
        self.log_path = Path(log)
        self.log = open(log, "w", encoding="utf-8")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=self.log,
                                     stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve.py exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"serve.py did not answer within {timeout} s: {self.output()}")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def rss_kb(self) -> int:
        """Resident memory of the process (VmRSS), KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM, then its exit status (killed past `timeout`)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.log.close()
        return self.proc.returncode


def request_mix(records: dict[str, list[dict]], n: int) -> list[dict]:
    """n request bodies cycling over the tasks, each over its records."""
    tasks = list(records)
    bodies = []
    for i in range(n):
        task = tasks[i % len(tasks)]
        bodies.append({"model": task, "input": records[task][(i // len(tasks)) % len(records[task])]})
    return bodies


def drive(urls: dict[str, str], bodies: list[dict], clients: int) -> dict:
    """Send `bodies` from `clients` threads (each one request at a time); rate, latencies, answers in order."""
    answers: list[str | None] = [None] * len(bodies)
    latencies: list[float] = [0.0] * len(bodies)

    def client(k: int) -> None:
        with httpx.Client(timeout=600) as http:
            for i in range(k, len(bodies), clients):
                start = time.perf_counter()
                r = http.post(urls[bodies[i]["model"]] + "/v1/completions", json=bodies[i])
                latencies[i] = time.perf_counter() - start
                r.raise_for_status()
                answers[i] = r.json()["choices"][0]["text"]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"requests": len(bodies), "wall_s": round(wall, 3), "requests_per_s": round(len(bodies) / wall, 3),
            "p50_s": round(statistics.median(ordered), 4), "p95_s": round(p95, 4), "answers": answers}  # fmt: skip


SETUPS = ("multi", "unbatched", "three")
"""multi: one server, every prompt, batches of up to 16; unbatched: the same with --max-batch-size 1;
three: one single-task server per prompt (each batching its own task's requests)."""


def _start(setup: str, prompts: dict[str, Path], out: Path, threads: int) -> dict[str, ServerProcess]:
    """{task: the server that answers it} for a setup; torch threads split so every setup uses `threads` in all."""
    flags = ("--max-batch-size", "1") if setup == "unbatched" else ("--max-batch-size", "16")
    if setup != "three":
        env = {"OMP_NUM_THREADS": str(threads)}
        srv = ServerProcess(prompts, *flags, "--max-wait-ms", "5", env=env, log=out / f"serve-{setup}.log")
        return dict.fromkeys(prompts, srv)
    env = {"OMP_NUM_THREADS": str(max(1, threads // len(prompts)))}
    return {
        t: ServerProcess({t: p}, *flags, "--max-wait-ms", "5", env=env, log=out / f"serve-three-{t}.log")
        for t, p in prompts.items()
    }


def run_serve_bench(prompts, records, clients=(1, 4, 16), per_client=8, minimum=24, out="results", threads=2):
    """Every setup at every client count (see the module docstring); the results, also written to out/."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, reference = [], {}
    for setup in SETUPS:
        servers = _start(setup, prompts, out, threads)
        try:
            procs = list({id(s): s for s in servers.values()}.values())
            urls = {t: s.url for t, s in servers.items()}
            drive(urls, request_mix(records, 2 * len(prompts)), 1)  # warm-up: first calls load kernels and caches
            for n in clients:
                bodies = request_mix(records, max(minimum, per_client * n))
                result = drive(urls, bodies, n)
                answers = result.pop("answers")
                reference.setdefault(n, answers)
                result |= {"setup": setup, "clients": n, "processes": len(procs)}
                result["rss_mb"] = round(sum(p.rss_kb() for p in procs) / 1024, 1)
                result["same_answers"] = sum(a == b for a, b in zip(answers, reference[n], strict=True))
                rows.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
        finally:
            for s in {id(s): s for s in servers.values()}.values():
                s.stop()
    (out / "serve_bench.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    (out / "serve_bench.md").write_text(markdown(rows), encoding="utf-8")
    return rows


def markdown(rows: list[dict]) -> str:
    """The table docs/serving.md shows, with each setup's speed relative to the unbatched server."""
    base = {r["clients"]: r["requests_per_s"] for r in rows if r["setup"] == "unbatched"}
    lines = [
        "| setup | processes | clients | requests | req/s | × unbatched | p50 s | p95 s | RSS MB | same answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["requests_per_s"] / base[r["clients"]] if base.get(r["clients"]) else float("nan")
        lines.append(
            f"| {r['setup']} | {r['processes']} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.2f} | "
            f"{ratio:.2f} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | {r['rss_mb']:.0f} | "
            f"{r['same_answers']}/{r['requests']} |"
        )
    return "\n".join(lines) + "\n"
