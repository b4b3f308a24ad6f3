"""Benchmark: Contract Net auction rounds (announce -> bids -> award) against a real exchange.

Run from the repository root: ``python bench/auction.py [--runs 3] [--rounds R] [--parallel 4]``.

What runs:
- the exchange, in this process (``running_exchange`` of the integration tests: the daemon with
  its embedded nats-server on a random port, SQLite journal, open mode), one fresh data directory
  per bidder count;
- N bidders in separate processes (``bench/auction_bidder.py``): several bidders per process, each
  with its own NATS connection, answering every call for proposals on ``swarm.task.cfp.<type>``
  at once with a bid on ``swarm.task.<id>.propose.<bidder>`` (a reply subject under its own
  inbox; the replies are counted). The bidders stand in for agents on other machines, yet here
  they share two cores with the exchange and nats-server: with nats-py on asyncio's loop they
  took ~45% of the machine's CPU in a 100-bidder round (the exchange ~28%), so their cost per
  message was most of what the round's latency measured. So by default each is a bare client of
  the NATS text protocol (``--bidder-client raw``: the same messages on the wire, about half the
  CPU of nats-py per round) on uvloop (``--bidder-loop``); ``--bidder-client nats-py`` and
  ``--bidder-loop asyncio`` measure with the heavier ones;
- the manager: one ``ExchangeClient`` connection in this process, announcing a task as ``claude``
  (max cost 0.001 tokens, bids of 0.000001-0.001) with a 5 s bid window. Every eligible bidder
  answers, so the exchange closes the window early and publishes the award; a round that waits for
  its window instead shows up as a 5,000 ms latency and is counted as "late".

A round's latency runs from sending the ``task.announce`` request to receiving the award on
``swarm.task.<id>.award`` (subscribed before the first round). Sequential rounds: one round at a
time. Parallel: ``--parallel`` rounds in flight (each a sequential loop). Each measurement is the
median of ``--runs`` runs, after a few warm-up rounds.

Targets: 100 bidders p50 <= 25 ms; 10 bidders >= 100 sequential rounds/s. For contrast, the seed's
design waited a fixed 2,000 ms bid window per auction (<= 0.5 sequential rounds/s).
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import anyio  # noqa: E402
from daemon_support import running_exchange  # noqa: E402
from steal import (  # noqa: E402
    ATTEMPTS_MAX,
    StealWindow,
    median_share,
    quiet_enough,
    share_text,
)

from protocols.client import ExchangeClient, connect  # noqa: E402
from protocols.logs import configure_logging  # noqa: E402

MANAGER = "claude"
BID_WINDOW_MS = 5000
WARMUP_ROUNDS = 10
READY_TIMEOUT_S = 60.0
ROUND_TIMEOUT_S = 30.0
SEED_WINDOW_MS = 2000
TARGET_P50_100_MS = 25.0
TARGET_RPS_10 = 100.0
DEFAULT_ROUNDS = {10: 200, 100: 100}


@dataclass(frozen=True)
class Sample:
    rounds: int
    seconds: float
    p50_ms: float
    p99_ms: float
    late: int  # awards not closed early (fewer bids than bidders)
    steal: float | None  # the CPU share the hypervisor gave to other guests meanwhile

    @property
    def rounds_per_s(self) -> float:
        return self.rounds / self.seconds


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Awards:
    """Awards by task id, time-stamped on arrival (possibly before the announce reply)."""

    def __init__(self) -> None:
        self.arrived: dict[str, tuple[float, dict[str, Any]]] = {}
        self.waiting: dict[str, asyncio.Future[tuple[float, dict[str, Any]]]] = {}

    async def on_award(self, msg: Any) -> None:
        now = time.perf_counter()
        award = json.loads(msg.data)
        task_id = award["task_id"]
        future = self.waiting.pop(task_id, None)
        if future is not None:
            future.set_result((now, award))
        else:
            self.arrived[task_id] = (now, award)

    async def wait(self, task_id: str) -> tuple[float, dict[str, Any]]:
        if task_id in self.arrived:
            return self.arrived.pop(task_id)
        future = asyncio.get_running_loop().create_future()
        self.waiting[task_id] = future
        return await asyncio.wait_for(future, ROUND_TIMEOUT_S)


async def _round(
    client: ExchangeClient, awards: Awards, task_type: str, n: int
) -> tuple[float, bool]:
    body = {
        "task_type": task_type,
        "asset": "BTC",
        "deadline_ms": 1000,
        "max_cost": "0.001",
        "bid_window_ms": BID_WINDOW_MS,
    }
    start = time.perf_counter()
    envelope = await client.command_envelope(MANAGER, "task.announce", body)
    if not envelope.ok:
        raise RuntimeError(f"announce refused: {envelope.error}")
    assert len(envelope.result["eligible"]) == n, envelope.result
    arrived, award = await awards.wait(envelope.result["task_id"])
    if award["winner"] is None:
        raise RuntimeError(f"no winner: {award}")
    return (arrived - start) * 1000, len(award["bids"]) < n


async def _measure(
    client: ExchangeClient, awards: Awards, task_type: str, n: int, rounds: int, parallel: int
) -> Sample:
    latencies: list[float] = []
    late = 0
    remaining = rounds

    async def loop() -> None:
        nonlocal remaining, late
        while remaining > 0:
            remaining -= 1
            ms, was_late = await _round(client, awards, task_type, n)
            latencies.append(ms)
            late += was_late

    window = StealWindow.start()
    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(parallel)))
    seconds = time.perf_counter() - start
    return Sample(
        rounds,
        seconds,
        _percentile(latencies, 0.50),
        _percentile(latencies, 0.99),
        late,
        window.share(),
    )


async def _spawn_bidders(
    url: str, task_type: str, names: list[str], procs: int, client: str, loop: str
) -> list[Any]:
    groups = [names[i::procs] for i in range(procs)]
    script = str(ROOT / "bench" / "auction_bidder.py")
    processes = []
    for group in groups:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            script,
            url,
            task_type,
            ",".join(group),
            client,
            loop,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        processes.append(process)
    for process in processes:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT_S)
        if line.strip() != b"ready":
            raise RuntimeError(f"bidder process {process.pid} did not start: {line!r}")
    return processes


async def _stop_bidders(processes: list[Any]) -> dict[str, Any]:
    totals: dict[str, Any] = {"bids": 0, "ok": 0, "errors": {}}
    for process in processes:
        if process.returncode is None:
            process.terminate()
    for process in processes:
        try:
            out, _ = await asyncio.wait_for(process.communicate(), 10.0)
        except TimeoutError:
            process.kill()
            await process.wait()
            continue
        for line in out.decode().splitlines():
            if line.startswith("{"):
                stats = json.loads(line)
                totals["bids"] += stats["bids"]
                totals["ok"] += stats["ok"]
                for code, count in stats["errors"].items():
                    totals["errors"][code] = totals["errors"].get(code, 0) + count
    return totals


async def _quiet_measure(
    measure: Callable[[], Awaitable[Sample]], max_steal: float | None, set_aside: list[Sample]
) -> Sample:
    """One measurement, taken again while the hypervisor stole more than ``max_steal`` (at most
    ``ATTEMPTS_MAX`` times; then the least stolen is kept). The others go to ``set_aside``."""
    tried: list[Sample] = []
    for _ in range(ATTEMPTS_MAX):
        sample = await measure()
        if quiet_enough(sample.steal, max_steal):
            set_aside.extend(tried)
            return sample
        tried.append(sample)
    tried.sort(key=lambda s: s.steal or 0.0)
    set_aside.extend(tried[1:])
    return tried[0]


async def bench_size(
    n: int,
    procs: int,
    rounds: int,
    runs: int,
    parallel: int,
    bidders: tuple[str, str],
    max_steal: float | None,
    data_dir: Path,
) -> dict[str, Any]:
    task_type = f"bench{n}"
    names = [f"bidder{n}x{i:03d}" for i in range(n)]
    async with (
        running_exchange(data_dir, open_mode=True) as handle,
        connect(
            handle.credentials("admin"), reconnect=False, request_timeout_s=10.0, attempts_max=1
        ) as client,
    ):
        for name in names:
            body = {
                "agent": name,
                "base_rate": "100",
                "primary_llm": "llama3.2",
                "role": "executor",
                "capabilities": [task_type],
            }
            envelope = await client.command_envelope("admin", "agent.register", body)
            assert envelope.ok, envelope
        awards = Awards()
        subscription = await client.nc.subscribe("swarm.task.*.award", cb=awards.on_award)
        await client.nc.flush()
        await client.nc.flush()
        processes = await _spawn_bidders(handle.url, task_type, names, procs, *bidders)
        try:
            set_aside: list[Sample] = []

            def measure(in_flight: int) -> Callable[[], Awaitable[Sample]]:
                return lambda: _measure(client, awards, task_type, n, rounds, in_flight)

            await _measure(client, awards, task_type, n, WARMUP_ROUNDS, 1)
            sequential = [
                await _quiet_measure(measure(1), max_steal, set_aside) for _ in range(runs)
            ]
            concurrent = []
            if parallel > 1:
                await _measure(client, awards, task_type, n, WARMUP_ROUNDS, parallel)
                concurrent = [
                    await _quiet_measure(measure(parallel), max_steal, set_aside)
                    for _ in range(runs)
                ]
        finally:
            totals = await _stop_bidders(processes)
            await subscription.unsubscribe()
    return {
        "sequential": sequential,
        "parallel": concurrent,
        "totals": totals,
        "set_aside": len(set_aside),
    }


def _median(samples: list[Sample], field: str) -> float:
    return statistics.median(getattr(s, field) for s in samples)


def _print(results: dict[int, dict[str, Any]], args: argparse.Namespace) -> None:
    print()
    print(
        f"Contract Net auction rounds: median of {args.runs} runs, {WARMUP_ROUNDS} warm-up rounds"
    )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; exchange + manager in one")
    print("process, bidders in separate processes (several bidders per process, one NATS")
    print(f"connection per bidder: {args.bidder_client} client, {args.bidder_loop} event loop)")
    print()
    header = (
        f"{'bidders':>7} {'procs':>5} {'mode':<12} {'rounds':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'rounds/s':>9} {'late':>4}  steal"
    )
    print(header)
    print("-" * len(header))
    for n, result in results.items():
        for mode, samples in (
            ("sequential", result["sequential"]),
            ("parallel", result["parallel"]),
        ):
            if not samples:
                continue
            label = mode if mode == "sequential" else f"{args.parallel} in flight"
            print(
                f"{n:>7} {result['procs']:>5} {label:<12} {samples[0].rounds:>6} "
                f"{_median(samples, 'p50_ms'):>8.2f} {_median(samples, 'p99_ms'):>8.2f} "
                f"{_median(samples, 'rounds_per_s'):>9.1f} {sum(s.late for s in samples):>4}  "
                f"{share_text(median_share(s.steal for s in samples))}"
            )
    print()
    for n, result in results.items():
        totals = result["totals"]
        print(
            f"N={n}: bids sent {totals['bids']}, accepted {totals['ok']}, "
            f"refused {totals['errors'] or 0}"
        )
        if args.max_steal is not None:
            print(
                f"N={n}: {result['set_aside']} runs set aside for steal above "
                f"{args.max_steal:.0%} (--max-steal)"
            )
    print()
    print(
        "steal: the median share of CPU time the hypervisor gave to other guests during the "
        "runs; a noisy row measures the neighbours more than the code"
    )
    if 100 in results:
        p50 = _median(results[100]["sequential"], "p50_ms")
        verdict = "PASS" if p50 <= TARGET_P50_100_MS else "FAIL"
        print(f"target 100 bidders p50 <= {TARGET_P50_100_MS:.0f} ms: {p50:.2f} ms  {verdict}")
    if 10 in results:
        rps = _median(results[10]["sequential"], "rounds_per_s")
        verdict = "PASS" if rps >= TARGET_RPS_10 else "FAIL"
        print(
            f"target 10 bidders >= {TARGET_RPS_10:.0f} rounds/s (sequential): {rps:.1f}  {verdict}"
        )
    print(
        f"seed design, for contrast: a fixed {SEED_WINDOW_MS:,} ms bid window per auction, so "
        f"p50 >= {SEED_WINDOW_MS:,} ms and <= {1000 / SEED_WINDOW_MS:.1f} sequential rounds/s, "
        "whatever the bidder count"
    )


async def amain(args: argparse.Namespace) -> dict[int, dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="auction-bench-") as tmp:
        for n in args.sizes:
            procs = min(n, args.procs or max(2, min(4, n // 5)))
            rounds = args.rounds or DEFAULT_ROUNDS.get(n, 100)
            started = time.perf_counter()
            result = await bench_size(
                n,
                procs,
                rounds,
                args.runs,
                args.parallel,
                (args.bidder_client, args.bidder_loop),
                args.max_steal,
                Path(tmp) / f"x{n}",
            )
            result["procs"] = procs
            results[n] = result
            print(f"N={n}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100", help="bidder counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=0, help="rounds per run (default 200 / 100)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4, help="rounds in flight (1: skip)")
    parser.add_argument("--procs", type=int, default=0, help="bidder processes (default 2 / 4)")
    parser.add_argument(
        "--bidder-client",
        choices=("raw", "nats-py"),
        default="raw",
        help="the bidders' NATS client: nats-py, or a bare client of the NATS text protocol",
    )
    parser.add_argument(
        "--bidder-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the bidder processes' event loop (the exchange's is asyncio's either way)",
    )
    parser.add_argument(
        "--max-steal",
        type=float,
        default=None,
        help="measure a run again (up to 4 times) when the hypervisor took more than this share "
        "of the CPU meanwhile, e.g. 0.05",
    )
    parser.add_argument("--log-level", default="warning", help="the exchange's (debug costs CPU)")
    args = parser.parse_args()
    configure_logging(level=args.log_level)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    results = anyio.run(amain, args)
    _print(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
