"""Serving trained prompts over HTTP: one frozen base, many named prompts, OpenAI-compatible completions.

    prompts.py   load the named checkpoints and check them against each other and the base
    schema.py    what a request may hold, its limits, the JSON errors
    batcher.py   the decoder thread: mixed-prompt batches, streaming, per-row stopping
    app.py       the FastAPI app (POST /v1/completions, GET /v1/models, GET /health)
    server.py    start it all under uvicorn; SIGTERM drains and returns

Needs the `serve` extra: pip install -e ".[serve]" (fastapi, uvicorn). See docs/serving.md.
"""
