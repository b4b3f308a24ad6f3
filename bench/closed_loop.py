"""The closed-loop requester the request benches share, and how they connect.

``closed_loop`` keeps ``in_flight`` workers each sending one request and waiting for its reply,
first for a warm-up (connections, inboxes, caches), then for the measured window; it returns
the throughput and the latency percentiles of that window. ``connect`` opens a connection with a
credentials file's identity, whichever way it authenticates (``protocols.client``), with a
large pending buffer so the load generator is never the one that drops messages.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
import nats.errors

from protocols.client import connect_options
from protocols.credentials import Credentials

PENDING_BYTES = 64 * 1024**2
REQUEST_TIMEOUT_S = 10.0


async def connect(creds: dict[str, Any]) -> Any:
    credentials = msgspec.convert(creds, Credentials)
    return await nats.connect(
        credentials.url, pending_size=PENDING_BYTES, **connect_options(credentials)
    )


@dataclass(frozen=True)
class Window:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


async def closed_loop(
    nc: Any,
    in_flight: int,
    duration_s: float,
    warmup_s: float,
    request: Callable[[int], tuple[str, bytes]],
    ok: Callable[[bytes], bool],
) -> Window:
    """``request(worker_index)`` gives each request's subject and body; ``ok(reply)`` whether its
    reply counts as a success (a failure or a timeout counts as an error)."""
    latencies: list[float] = []
    errors = 0
    stop_at = 0.0

    async def worker(index: int) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            subject, body = request(index)
            started = time.perf_counter()
            try:
                reply = await nc.request(subject, body, timeout=REQUEST_TIMEOUT_S)
            except nats.errors.Error:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            if not ok(reply.data):
                errors += 1

    stop_at = time.perf_counter() + warmup_s
    await asyncio.gather(*(worker(i) for i in range(in_flight)))
    latencies.clear()
    errors = 0
    started = time.perf_counter()
    stop_at = started + duration_s
    await asyncio.gather(*(worker(i) for i in range(in_flight)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Window(
        requests_per_s=len(latencies) / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        errors=errors,
    )
