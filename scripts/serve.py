"""Serve trained prompts on one frozen base over HTTP, OpenAI-compatible (`model` names the prompt).

    python scripts/serve.py --prompt qna=checkpoints/smoke-qna --prompt sum=checkpoints/smoke-sum \\
        --prompt tx=checkpoints/smoke-tx                       # http://127.0.0.1:8000/v1/completions
    python scripts/serve.py --prompts-dir checkpoints --port 8001    # every run folder, named by its run
    SOFTPROMPT_API_KEY=secret python scripts/serve.py --prompts-dir checkpoints --host 0.0.0.0   # exposed: key it

Each prompt is a run folder (its latest good checkpoint) or a checkpoint folder, checked at start (SHA-256,
shape, base model); a bad one stops the start with one line (exit 2). SIGTERM finishes the requests in flight,
then exits 0. Needs pip install -e ".[serve]". docs/serving.md has the API and the benchmark.
"""

import argparse

from softprompt.cli import run_cli
from softprompt.errors import SoftPromptError
from softprompt.serving.prompts import prompts_in
from softprompt.serving.schema import Limits
from softprompt.serving.server import ServeOptions, serve


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--prompt", action="append", default=[], metavar="NAME=FOLDER", help="a prompt to serve (repeatable)")
    add("--prompts-dir", help="serve every run folder in this folder, named by the folder")
    add("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    add("--port", type=int, default=8000)
    add("--max-batch-size", type=int, default=16, help="rows decoded together at most (1: no batching)")
    add("--max-wait-ms", type=float, default=10.0, help="wait for more requests before a batch starts (ms)")
    add("--max-body-bytes", type=int, default=Limits.max_body_bytes, help="largest request body")
    add("--max-inputs", type=int, default=Limits.max_inputs, help="most inputs (choices) in one request")
    add("--api-key-env", default="SOFTPROMPT_API_KEY", help="environment variable holding the API key")
    add("--device", help="cpu, cuda, cuda:N or auto (default: the prompts' train.device)")
    add("--debug", action="store_true", help="show tracebacks")
    return p.parse_args(argv)


def specs(a) -> dict:
    out = dict(prompts_in(a.prompts_dir)) if a.prompts_dir else {}
    for item in a.prompt:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SoftPromptError(f"--prompt {item!r}: expected NAME=FOLDER, e.g. --prompt sum=checkpoints/smoke-sum")
        if name in out:
            raise SoftPromptError(f"--prompt {item!r}: a prompt named '{name}' is given twice")
        out[name] = path
    return out


def main(argv=None):
    a = parse(argv)
    try:
        limits = Limits(a.max_body_bytes, a.max_inputs)
    except ValueError as err:
        raise SoftPromptError(f"--max-body-bytes and --max-inputs: {err}") from err
    opts = ServeOptions(a.host, a.port, a.max_batch_size, a.max_wait_ms, limits, a.api_key_env, a.device)
    serve(specs(a), opts)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
