"""Benchmark: the metering gateway against calling its upstream directly, in the same run.

Run from the repository root: ``python bench/gateway.py [--duration-s 3] [--repeats 3]
[--in-flight 1 32] [--upstream-latency-ms 0 100 50+100] [--gateway-workers 1 2]``.

What runs, each in its own process:
- the exchange: ``exchange up`` (secure mode, embedded nats-server, SQLite WAL with
  ``synchronous=FULL``) in a fresh data directory, with ``llama3.2`` priced as configured;
- the upstream: ``python -m exchange.gateway.fake_upstream`` (deterministic chat completions),
  one per ``--upstream-latency-ms`` item, ``WAIT`` or ``WAIT+JITTER`` in ms:
  - ``0`` answers at once: the gateway's CPU then competes with everything else on the machine,
    and at 32 in flight every process is saturated (the added latency is then a throughput
    ratio);
  - ``100`` waits 100 ms before every answer, as a model takes time to answer without spending
    this machine's CPU. Clients that start together stay in step: all 32 answers come back in
    the same millisecond and all 32 next requests reach the gateway at once, every time (the
    worst case for a single-threaded gateway: the last waits for 31 others' CPU);
  - ``50+100`` waits 50 ms plus a uniform draw below 100 ms, as a model's time varies with the
    request: the clients drift apart, and requests arrive spread out, as from a real swarm;
- the gateways: ``exchange gateway serve --upstream <the upstream> --workers N``, one per
  ``--gateway-workers`` item and upstream (N processes on one port, see
  ``exchange/gateway/workers.py``): each admits a request against a quota the exchange granted
  (asking for one when none has room), forwards it and charges the reported usage to the quota,
  settled in the background;
- the requester: this process, ``in_flight`` keep-alive connections, each posting a
  non-streaming chat completion (``max_tokens`` 16) and awaiting its answer in a loop (a
  minimal HTTP/1.1 client on asyncio streams, so that the load generator costs little CPU).

Runs alternate direct / each gateway, ``--repeats`` times per in-flight count; each figure is
the median of the repeats. The added latency is measured per request: its latency less the
upstream's deliberate wait (the fake upstream reports it in each answer) is its overhead, and
added p50 (p99) = gateway overhead p50 (p99) - direct overhead p50 (p99) of the same round. (With
a fixed wait this equals the difference of the latencies' percentiles; with a jittered one it
is not blurred by which waits each run drew.) The agent's gateway limits are set high (rpm,
tpm, hourly, daily) so that nothing is refused. Target: added p50 <= 2 ms at 32 in flight.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

READY_TIMEOUT_S = 60.0
IN_FLIGHT = (1, 32)
# The upstreams, each "WAIT" or "WAIT+JITTER" in ms (see the module doc).
UPSTREAMS = ("0", "100", "50+100")
# The gateways measured: ``exchange gateway serve --workers N`` for each N.
GATEWAY_WORKERS = (1, 2)
WAIT_FIELD = b'"x_upstream_wait_ms":'
MODEL = "llama3.2"
WARMUP_S = 0.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(command: list[str], ready: bytes, *, stream: str = "stdout") -> tuple[Any, bytes]:
    """Starts ``command``; returns it and the first output line containing ``ready``."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
        stderr=subprocess.PIPE if stream == "stderr" else subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    pipe = process.stdout if stream == "stdout" else process.stderr
    assert pipe is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        line = pipe.readline()
        if not line:
            raise RuntimeError(f"{command[:4]} exited before it was ready")
        if ready in line:
            _drain(pipe)
            return process, line
    raise RuntimeError(f"{command[:4]} was not ready in time")


def _drain(pipe: Any) -> None:
    import threading

    threading.Thread(target=lambda: [None for _ in pipe], daemon=True).start()


def _cli(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "exchange.cli.main", *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


class _Connection:
    """A minimal HTTP/1.1 keep-alive client on one asyncio stream: the load generator must cost
    little CPU next to the servers it measures (a pooled httpx client at 32 in flight cost more
    than the fake upstream itself on two cores), and must treat both targets alike."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> "_Connection":
        parsed = urlsplit(url)
        reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
        return cls(reader, writer)

    async def post(self, request: bytes) -> tuple[int, bytes]:
        """Sends ``request``; its answer's status and body."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def _request(url: str, key: str | None) -> bytes:
    parsed = urlsplit(url)
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "summarise the order book for btc"}],
            "max_tokens": 16,
        }
    ).encode()
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST {parsed.path}/chat/completions HTTP/1.1\r\nhost: {parsed.netloc}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{auth}\r\n"
    ).encode() + body


def _upstream_wait_s(body: bytes) -> float:
    """How long the fake upstream waited on purpose before this answer (its reply says)."""
    at = body.find(WAIT_FIELD)
    if at < 0:
        return 0.0
    start = at + len(WAIT_FIELD)
    end = min(i for i in (body.find(b",", start), body.find(b"}", start), len(body)) if i >= 0)
    return float(body[start:end]) / 1000


def _percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


async def _window(url: str, key: str | None, in_flight: int, duration_s: float) -> dict[str, Any]:
    request = _request(url, key)
    latencies: list[float] = []
    # Each answer's latency less the upstream's deliberate wait: what everything else cost it.
    overheads: list[float] = []
    errors = 0
    connections = [await _Connection.open(url) for _ in range(in_flight)]
    start = time.perf_counter()
    measure_from = start + WARMUP_S
    stop_at = measure_from + duration_s

    async def worker(connection: _Connection) -> None:
        nonlocal errors
        while (now := time.perf_counter()) < stop_at:
            status, body = await connection.post(request)
            took = time.perf_counter() - now
            if status != 200:
                errors += 1
            elif now >= measure_from:
                latencies.append(took)
                overheads.append(took - _upstream_wait_s(body))

    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        for connection in connections:
            connection.close()
    latencies.sort()
    overheads.sort()
    return {
        "requests_per_s": len(latencies) / duration_s,
        "p50_ms": 1000 * _percentile(latencies, 0.5),
        "p99_ms": 1000 * _percentile(latencies, 0.99),
        "overhead_p50_ms": 1000 * _percentile(overheads, 0.5),
        "overhead_p99_ms": 1000 * _percentile(overheads, 0.99),
        "errors": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--in-flight", type=int, nargs="+", default=list(IN_FLIGHT))
    parser.add_argument(
        "--upstream-latency-ms",
        type=_upstream_spec,
        nargs="+",
        default=[_upstream_spec(u) for u in UPSTREAMS],
        metavar="WAIT[+JITTER]",
    )
    parser.add_argument(
        "--gateway-workers",
        type=int,
        nargs="+",
        default=list(GATEWAY_WORKERS),
        metavar="N",
        help="a gateway for each (exchange gateway serve --workers N), measured in turn",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    processes: list[Any] = []
    results: dict[tuple[str, int], dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as temporary:
        data = Path(temporary) / "data"
        try:
            exchange, _ = _start(
                [
                    *(sys.executable, "-m", "exchange.cli.main", "up", "--log-json"),
                    *("--data", str(data), "--port", str(_free_port())),
                ],
                b'"exchange_ready"',
                stream="stderr",
            )
            processes.append(exchange)
            _cli(
                *("limits", "set", "zero", "--data", str(data)),
                *("--hourly", "1000000", "--daily", "1000000", "--rpm", "0", "--tpm", "0"),
            )
            key = _cli("gateway", "key", "zero", "--data", str(data)).strip()
            for latency_ms, jitter_ms in args.upstream_latency_ms:
                upstream = _upstream_name(latency_ms, jitter_ms)
                direct, gateways, started = _upstream_and_gateways(
                    data, latency_ms, jitter_ms, args.gateway_workers
                )
                processes.extend(started)
                targets: list[tuple[str, str, str | None]] = [("direct", direct, None)]
                targets += [(_gateway_name(n), url, key) for n, url in gateways.items()]
                for in_flight in args.in_flight:
                    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in targets}
                    for repeat in range(args.repeats):
                        for name, url, k in targets:
                            print(
                                f"upstream {upstream} ms, {name}, in flight "
                                f"{in_flight}, run {repeat + 1}",
                                file=sys.stderr,
                            )
                            window = _window(url, k, in_flight, args.duration_s)
                            runs[name].append(asyncio.run(window))
                    results[upstream, in_flight] = runs
                _stop(started)
                processes = [p for p in processes if p not in started]
        finally:
            _stop(list(reversed(processes)))
    summary = _summary(results)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print(summary)
    return 0


def _upstream_spec(text: str) -> tuple[float, float]:
    """``WAIT`` or ``WAIT+JITTER`` (ms): the upstream's wait, and the bound of its extra."""
    wait, _, jitter = text.partition("+")
    try:
        return float(wait), float(jitter or 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WAIT or WAIT+JITTER in ms") from None


def _upstream_name(latency_ms: float, jitter_ms: float) -> str:
    return f"{latency_ms:g}+{jitter_ms:g}" if jitter_ms else f"{latency_ms:g}"


def _gateway_name(workers: int) -> str:
    return f"gateway x{workers}"


def _upstream_and_gateways(
    data: Path, latency_ms: float, jitter_ms: float, workers: list[int]
) -> tuple[str, dict[int, str], list[Any]]:
    """A fake upstream answering after ``latency_ms`` plus up to ``jitter_ms``, and a gateway
    in front of it for each count of ``workers``: the upstream's URL, each gateway's, and the
    processes."""
    upstream, line = _start(
        [
            *(sys.executable, "-m", "exchange.gateway.fake_upstream", "--models", MODEL),
            *("--latency-ms", str(latency_ms), "--latency-jitter-ms", str(jitter_ms)),
        ],
        b"listening",
    )
    direct = f"http://127.0.0.1:{line.split()[1].decode()}/v1"
    started, gateways = [upstream], {}
    try:
        for count in workers:
            gateway, line = _start(
                [
                    *(sys.executable, "-m", "exchange.cli.main", "gateway", "serve"),
                    *("--data", str(data), "--upstream", direct, "--port", "0"),
                    *("--workers", str(count)),
                ],
                b"gateway at",
            )
            started.append(gateway)
            gateways[count] = line.split()[2].decode()
    except BaseException:
        _stop(started)
        raise
    return direct, gateways, started


def _stop(processes: list[Any]) -> None:
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def _summary(
    results: dict[tuple[str, int], dict[str, list[dict[str, Any]]]],
) -> list[dict[str, Any]]:
    """A row per upstream, in-flight count and gateway, beside the direct runs of its rounds."""
    rows = []
    for (upstream, in_flight), runs in results.items():
        direct = runs["direct"]
        for name, samples in runs.items():
            if name == "direct":
                continue
            row: dict[str, Any] = {"upstream_ms": upstream, "in_flight": in_flight, "via": name}
            for side, side_samples in (("direct", direct), ("gateway", samples)):
                for field in ("requests_per_s", "p50_ms", "p99_ms"):
                    row[f"{side}_{field}"] = statistics.median(s[field] for s in side_samples)
                row[f"{side}_errors"] = sum(s["errors"] for s in side_samples)
            pairs = list(zip(direct, samples, strict=True))
            for p in ("p50", "p99"):
                row[f"added_{p}_ms"] = statistics.median(
                    g[f"overhead_{p}_ms"] - d[f"overhead_{p}_ms"] for d, g in pairs
                )
            rows.append(row)
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'upstream ms':>11} {'in flight':>9} {'via':>12} | "
        f"{'direct req/s':>12} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'gateway req/s':>13} {'p50 ms':>7} {'p99 ms':>7} | {'added p50':>9} {'added p99':>9}"
    )
    for r in rows:
        print(
            f"{r['upstream_ms']:>11} {r['in_flight']:>9} {r['via']:>12} | "
            f"{r['direct_requests_per_s']:>12.0f} {r['direct_p50_ms']:>7.2f} "
            f"{r['direct_p99_ms']:>7.2f} | {r['gateway_requests_per_s']:>13.0f} "
            f"{r['gateway_p50_ms']:>7.2f} {r['gateway_p99_ms']:>7.2f} | "
            f"{r['added_p50_ms']:>9.2f} {r['added_p99_ms']:>9.2f}"
        )
    errors = sum(r["direct_errors"] + r["gateway_errors"] for r in rows)
    if errors:
        print(f"{errors} requests failed")


if __name__ == "__main__":
    sys.exit(main())
