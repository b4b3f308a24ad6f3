"""Benchmark: the journal on a three-node JetStream cluster (R3) beside SQLite, and failover time.

Run from the repository root: ``python bench/replicated.py [--duration-s 3] [--repeats 3]
[--kills 10]``.

1. Throughput: durable transfers per second at 64 in flight (the closed loop of
   ``bench/transfers.py``, in its own process), against ``exchange up`` on SQLite (embedded
   nats-server) and against ``exchange up --journal jetstream --replicas 3`` on three clustered
   nats-servers on loopback, alternating, in the same run. Target: R3 >= 0.5x SQLite.
2. Failover: a leader and a standby under a steady load of retrying clients; the leader is
   killed with SIGKILL, and the time from the last reply before the kill to the first reply after
   it is taken; the killed node comes back as a standby and the next kill takes the other one.
   Target: median <= 3 s, worst <= 5 s over ``--kills`` kills (the lease's TTL is 2 s).

Everything runs on one small machine: the three nats-servers, the exchange nodes and the load
share its cores, so the R3 figure is what a cluster costs in CPU here, not over a network.
"""

import argparse
import logging
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import Process

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console
from rich.table import Table
from transfers import Sample, _admin, _free_port, _measure, _start_exchange

from exchange.daemon.natsserver import run_nats_cluster
from protocols.client import ExchangeClient, connect
from protocols.client_errors import ExchangeUnavailableError
from protocols.credentials import Credentials

IN_FLIGHT = 64
READY_TIMEOUT_S = 60.0


class _Node:
    """``exchange up`` on the cluster, its log lines kept; events for following and leading."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.following = anyio.Event()
        self.leading = anyio.Event()
        self.lines: list[bytes] = []

    async def read_log(self) -> None:
        # Read for as long as the process lives (the pipe must never fill).
        assert self.process.stderr is not None
        partial = b""
        async for chunk in self.process.stderr:
            *lines, partial = (partial + chunk).split(b"\n")
            self.lines = (self.lines + lines)[-50:]
            for line in lines:
                if b'"standby_following"' in line:
                    self.following.set()
                if b'"exchange_ready"' in line:
                    self.leading.set()

    def tail(self) -> str:
        return "\n".join(line.decode(errors="replace") for line in self.lines[-15:])


async def _node(data_dir: Path, url: str, *extra: str) -> _Node:
    process = await anyio.open_process(
        [
            *(sys.executable, "-m", "exchange.cli.main", "up", "--data", str(data_dir)),
            *("--nats", url, "--journal", "jetstream", "--log-json", *extra),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    node = _Node(process)
    _background.start_soon(node.read_log)
    return node


def _throughput(ctx: Any, repeats: int, duration_s: float, cluster_url: str) -> dict[str, Sample]:
    samples: dict[str, list[Sample]] = {"sqlite": [], "jetstream": []}
    with tempfile.TemporaryDirectory(prefix="bench-replicated-") as tmp:
        data = Path(tmp) / "sqlite"
        sqlite = _start_exchange(data, _free_port())
        try:
            creds = {"sqlite": _admin(data), "jetstream": {"url": cluster_url}}
            for repeat in range(repeats):
                for target in ("sqlite", "jetstream"):
                    sample = _measure(ctx, creds[target], "exchange", IN_FLIGHT, duration_s)
                    samples[target].append(sample)
                    print(
                        f"  run {repeat + 1}/{repeats} {target:9} {sample.requests_per_s:8.0f}/s "
                        f"p50 {sample.p50_ms:.1f} ms",
                        flush=True,
                    )
        finally:
            sqlite.send_signal(signal.SIGTERM)
            sqlite.wait(timeout=30)
    return {
        target: Sample(
            statistics.median(s.requests_per_s for s in runs),
            statistics.median(s.p50_ms for s in runs),
            statistics.median(s.p99_ms for s in runs),
            sum(s.errors for s in runs),
        )
        for target, runs in samples.items()
    }


class _Load:
    def __init__(self, client: ExchangeClient) -> None:
        self.client = client
        self.reply_times: list[float] = []
        self.replied = anyio.Event()
        self.stop = False

    async def worker(self, name: str) -> None:
        index = 0
        while not self.stop:
            while True:
                try:
                    reply = await self.client.command_envelope(
                        "claude",
                        "transfer",
                        {"to": "zero", "amount": "0.000001"},
                        request_id=f"{name}-{index}",
                    )
                except ExchangeUnavailableError:
                    continue
                break
            assert reply.ok, reply
            self.reply_times.append(time.perf_counter())
            self.replied.set()
            self.replied = anyio.Event()
            index += 1
            await anyio.sleep(0.01)


async def _failovers(root: Path, url: str, kills: int) -> list[float]:
    gaps: list[float] = []
    nodes = {"a": await _node(root / "a", url)}
    with anyio.fail_after(READY_TIMEOUT_S):
        await nodes["a"].leading.wait()
    nodes["b"] = await _node(root / "b", url, "--standby")
    leader, standby = "a", "b"
    async with connect(Credentials(url=url), request_timeout_s=0.5) as client:
        load = _Load(client)
        async with anyio.create_task_group() as tg:
            for worker in range(4):
                tg.start_soon(load.worker, f"w{worker}")
            for kill in range(kills):
                # A steady state: the standby follows, and has for a moment.
                with anyio.fail_after(READY_TIMEOUT_S):
                    await nodes[standby].following.wait()
                await anyio.sleep(1.0)
                process = nodes[leader].process
                os.kill(process.pid, signal.SIGKILL)
                await process.wait()
                # Replies that came before the old leader was gone are the old leader's.
                dead_at = time.perf_counter()
                last_before = max(t for t in load.reply_times if t <= dead_at)
                try:
                    with anyio.fail_after(30):
                        await nodes[standby].leading.wait()
                        while not any(t > dead_at for t in load.reply_times):
                            await load.replied.wait()
                except TimeoutError:
                    print(f"the standby did not take over; its log:\n{nodes[standby].tail()}")
                    raise
                first_after = min(t for t in load.reply_times if t > dead_at)
                gaps.append(first_after - last_before)
                print(f"  kill {kill + 1}/{kills}: {gaps[-1]:.2f} s without a reply", flush=True)
                # The killed node comes back as the standby.
                nodes[leader] = await _node(root / leader, url, "--standby")
                leader, standby = standby, leader
            load.stop = True
    for node in nodes.values():
        node.process.terminate()
        await node.process.wait()
    return gaps


_background: Any = None


async def _main(args: argparse.Namespace) -> None:
    global _background
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        root = Path(tmp)
        async with (
            run_nats_cluster(data_dir=root / "nats") as servers,
            anyio.create_task_group() as background,
        ):
            _background = background
            url = ",".join(server.url for server in servers)
            print("1. durable transfers at 64 in flight, SQLite vs R3 (alternating)", flush=True)
            throughput_dir = root / "throughput"
            node = await _node(throughput_dir, url)
            with anyio.fail_after(READY_TIMEOUT_S):
                await node.leading.wait()
            results = await anyio.to_thread.run_sync(
                _throughput, ctx, args.repeats, args.duration_s, servers[0].url
            )
            node.process.terminate()
            await node.process.wait()
            print(f"2. failover over {args.kills} kills of the leader", flush=True)
            gaps = await _failovers(root / "failover", url, args.kills)
            background.cancel_scope.cancel()
    _report(results, gaps, args)


def _report(results: dict[str, Sample], gaps: list[float], args: argparse.Namespace) -> None:
    console = Console()
    table = Table(title=f"Durable transfers, 64 in flight (median of {args.repeats})")
    for column in ("journal", "transfers/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(column, justify="right")
    for target, sample in results.items():
        table.add_row(
            target,
            f"{sample.requests_per_s:,.0f}",
            f"{sample.p50_ms:.1f}",
            f"{sample.p99_ms:.1f}",
            str(sample.errors),
        )
    console.print(table)
    ratio = results["jetstream"].requests_per_s / results["sqlite"].requests_per_s
    console.print(f"R3 / SQLite: {ratio:.2f}x (target >= 0.5x)")
    if gaps:
        console.print(
            f"failover over {len(gaps)} kills: median {statistics.median(gaps):.2f} s, worst "
            f"{max(gaps):.2f} s, best {min(gaps):.2f} s (targets: median <= 3 s, worst <= 5 s)"
        )


def main() -> int:
    # The clients' retries while no leader serves are expected here: keep the output readable.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kills", type=int, default=10)
    args = parser.parse_args()
    anyio.run(_main, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
