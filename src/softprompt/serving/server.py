"""Starting the server: load and check the prompts, start the decoder thread, run uvicorn until SIGTERM.

    serve({"qna": "checkpoints/smoke-qna", "sum": "checkpoints/smoke-sum"}, ServeOptions(port=8000))

On SIGTERM (or Ctrl-C) uvicorn stops accepting connections, lets the requests in flight finish (streams
included), then the decoder thread drains and stops, and `serve` returns: serve.py exits 0. uvicorn's own
signal handling would raise the signal again after its graceful shutdown (so the process would end "killed by
SIGTERM"); this server's handlers do not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from pathlib import Path

import uvicorn

from ..devices import pick_device
from ..errors import SoftPromptError
from .app import Service, create_app
from .batcher import Batcher, Engine
from .prompts import load_served
from .schema import Limits


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    """Where to listen: the loopback interface unless told otherwise (--host 0.0.0.0 exposes it)."""
    port: int = 8000
    max_batch: int = 16
    """Rows decoded together at most (1: one request at a time, no batching)."""
    max_wait_ms: float = 10.0
    """How long the decoder waits for more requests after the first, before it starts a batch."""
    limits: Limits = dataclasses.field(default_factory=Limits)
    api_key_env: str = "SOFTPROMPT_API_KEY"
    """The environment variable holding the API key; unset or empty: no key needed."""
    device: str | None = None
    """cpu, cuda, cuda:N or auto; None: the first prompt's train.device."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535 or self.max_batch < 1 or self.max_wait_ms < 0:
            raise SoftPromptError(
                f"port must lie in 0-65535, max batch be at least 1 and max wait not negative "
                f"(got {self.port}, {self.max_batch}, {self.max_wait_ms})"
            )


class _Server(uvicorn.Server):
    """uvicorn's server with signal handlers that shut down gracefully and do not re-raise the signal."""

    @contextlib.contextmanager
    def capture_signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def build_service(specs: dict[str, str | Path], opts: ServeOptions) -> Service:
    """The checked prompts on one base, with their decoder thread running."""
    served, multi, tokenizer = load_served(specs)
    first = next(iter(served.values())).cfg
    multi.to(pick_device(opts.device or first.train.device, first.model.dtype))
    engine = Engine(multi, tokenizer, {n: p.cfg.task for n, p in served.items()}, first.train.precision)
    batcher = Batcher(engine, opts.max_batch, opts.max_wait_ms / 1000)
    key = os.environ.get(opts.api_key_env) or None
    announce = f"serving {', '.join(served)} on http://{opts.host}:{opts.port} (batch {opts.max_batch})"
    return Service(served, batcher, tokenizer, opts.limits, api_key=key, announce=announce)


def serve(specs: dict[str, str | Path], opts: ServeOptions) -> None:
    """Serve until SIGTERM or Ctrl-C (see the module docstring); a bad prompt fails before anything listens."""
    app = create_app(build_service(specs, opts))
    config = uvicorn.Config(app, host=opts.host, port=opts.port, log_level="warning", timeout_graceful_shutdown=None)
    _Server(config).run()
