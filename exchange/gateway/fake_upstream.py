"""A deterministic OpenAI-compatible server: the upstream of the gateway's tests, its benchmark
and the demo (``python -m exchange.gateway.fake_upstream [--port N]``; it prints
``listening <port>`` once it accepts connections).

Replies and usage are functions of the request alone: a chat's answer is the words of its last
message echoed back (at most ``max_tokens`` of them), one token per word; its prompt tokens are
the words of every message plus 3 per message. Streaming sends one chunk per word, then a final
chunk with ``usage`` when ``stream_options.include_usage`` is set. Embeddings are 8 numbers
from a hash of each input. ``/v1/models`` lists the models it was started with. A request's
``metadata.chunk_delay_ms`` spaces its stream's chunks (a slow model, for cancellation tests).
``--latency-ms`` makes every chat answer wait that long first (a model's time to answer, spent
waiting rather than computing: the benchmark's realistic upstream), and ``--latency-jitter-ms``
adds a uniform extra wait below that bound to each (a model's time varies with the request, so
that clients which start together do not stay in step). A reply that waited says how long in
``x_upstream_wait_ms``, so that a client can tell the model's time from everything else's.
"""

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from exchange.listen import listening_socket

DEFAULT_MODELS = ("gpt-x", "llama3.2", "claude-sonnet")


def _words(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [w for v in value for w in _words(v)]
    if isinstance(value, dict):
        return _words(value.get("content", value.get("text", "")))
    return []


def chat_answer(body: dict[str, Any]) -> tuple[list[str], int]:
    """(the answer's words, the prompt tokens) of a chat request."""
    messages = body.get("messages") or []
    prompt = sum(len(_words(m)) + 3 for m in messages)
    limit = body.get("max_completion_tokens", body.get("max_tokens")) or 16
    last = _words(messages[-1]) if messages else []
    answer = (["echo:", *last])[:limit]
    return answer, prompt


# The jitter's draws: one fixed sequence, so that runs are alike.
JITTER_SEED = 0


def make_app(
    models: tuple[str, ...], *, latency_ms: float = 0.0, latency_jitter_ms: float = 0.0
) -> Starlette:
    jitter = random.Random(JITTER_SEED)

    async def list_models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in models
                ],
            }
        )

    async def chat(request: Request) -> Response:
        body = await request.json()
        if body.get("model") not in models:
            return JSONResponse(
                {
                    "error": {
                        "message": "no such model",
                        "type": "invalid_request_error",
                        "code": "model_not_found",
                    }
                },
                status_code=404,
            )
        wait_ms = latency_ms + latency_jitter_ms * jitter.random()
        if wait_ms:
            await anyio.sleep(wait_ms / 1000)
        waited = {"x_upstream_wait_ms": round(wait_ms, 3)} if wait_ms else {}
        words, prompt = chat_answer(body)
        created = int(time.time())
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(words),
            "total_tokens": prompt + len(words),
        }
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            # A test's slow model: metadata.chunk_delay_ms between chunks.
            delay_s = float((body.get("metadata") or {}).get("chunk_delay_ms", 0)) / 1000

            async def chunks() -> AsyncIterator[bytes]:
                for i, word in enumerate(words):
                    if i and delay_s:
                        await anyio.sleep(delay_s)
                    chunk = {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "delta": ({"role": "assistant"} if i == 0 else {})
                                | {"content": (" " if i else "") + word},
                                "finish_reason": None,
                            }
                        ],
                    }
                    yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
                last = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
                yield b"data: " + json.dumps(last).encode() + b"\n\n"
                if include:
                    tail = {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": body["model"],
                        "choices": [],
                        "usage": usage,
                    }
                    yield b"data: " + json.dumps(tail).encode() + b"\n\n"
                yield b"data: [DONE]\n\n"

            return StreamingResponse(chunks(), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": created,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": " ".join(words)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
            | waited
        )

    async def completions(request: Request) -> Response:
        body = await request.json()
        prompt_words = _words(body.get("prompt", ""))
        limit = body.get("max_tokens") or 16
        words = (["echo:", *prompt_words])[:limit]
        return JSONResponse(
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "text": " ".join(words), "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": len(prompt_words),
                    "completion_tokens": len(words),
                    "total_tokens": len(prompt_words) + len(words),
                },
            }
        )

    async def embeddings(request: Request) -> Response:
        body = await request.json()
        inputs = body.get("input", "")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = []
        for i, item in enumerate(items):
            digest = hashlib.sha256(json.dumps(item).encode()).digest()
            data.append(
                {"object": "embedding", "index": i, "embedding": [b / 255 for b in digest[:8]]}
            )
        tokens = len(_words(items))
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    return Starlette(
        routes=[
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
        ]
    )


@asynccontextmanager
async def fake_upstream_process(*, start_timeout_s: float) -> AsyncIterator[str]:
    """The fake upstream as its own process on a free port; yields its base URL (``.../v1``)
    once it listens, and stops it on the way out. Raises TimeoutError when it does not start
    within ``start_timeout_s``."""
    command = [sys.executable, "-m", "exchange.gateway.fake_upstream", "--port", "0"]
    async with await anyio.open_process(command, stderr=None) as process:
        try:
            assert process.stdout is not None
            line = b""
            with anyio.fail_after(start_timeout_s):
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive(1)
            word, port = line.decode().split()
            if word != "listening":
                raise RuntimeError(f"the fake upstream said {line!r}, not `listening <port>`")
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            process.terminate()
            with anyio.CancelScope(shield=True):
                await process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m exchange.gateway.fake_upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="wait this long before each chat answer"
    )
    parser.add_argument(
        "--latency-jitter-ms",
        type=float,
        default=0.0,
        help="wait up to this much longer (uniformly drawn) before each chat answer",
    )
    args = parser.parse_args(argv)
    sock = listening_socket(args.host, args.port)
    models = tuple(m for m in args.models.split(",") if m)
    app = make_app(models, latency_ms=args.latency_ms, latency_jitter_ms=args.latency_jitter_ms)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    print(f"listening {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])
    sys.exit(0)


if __name__ == "__main__":
    main()
