"""``exchange demo auction``: the whole system live, from a fresh clone, in under a minute.

It starts the exchange in this process (with its embedded nats-server), registers the demo's
agents through admin, launches each worker as a separate ``python -m agents`` process, shows the
auctions live as they happen (signals, calls for proposals, bids and scores, awards, escrow,
disputes, releases) in the terminal and on the web dashboard (``--dashboard-port``; its address
is printed first), stops after ``--auctions`` closed auctions (or ``--timeout-s``), and ends
with a summary read from the ledger. Every child process is stopped on the way out, Ctrl-C
included.

Timing between processes is real, so two runs with the same ``--seed`` see the same prices,
profiles and deliberate dispute, but not always the same interleaving of bids.
"""

import argparse
import functools
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TextIO

import anyio
import msgspec
import structlog
from anyio.abc import Process, TaskStatus
from rich.console import Console
from rich.live import Live

from agents.demo import AUCTION_DEMO, DEMO_SEED, DemoAgent
from agents.roles.analyst import GATEWAY_KEY_ENV
from exchange.daemon.app import ExchangeHandle, run_exchange
from exchange.daemon.natsserver import RANDOM_PORT
from exchange.daemon.settings import Settings
from exchange.dashboard.cli import PORT_DEFAULT as DASHBOARD_PORT_DEFAULT
from exchange.dashboard.cli import run_dashboard
from exchange.dashboard.server import bind
from exchange.demo.view import (
    AuctionBoard,
    render_balances,
    render_board,
    render_metrics,
    render_summary,
)
from exchange.gateway.cli import run_gateway
from exchange.gateway.fake_upstream import fake_upstream_process
from exchange.gateway.keys import issue_key, keys_path
from exchange.gateway.upstreams import parse_upstream
from protocols.client import ExchangeClient, connect
from protocols.client_errors import RefusedError
from protocols.errors import ErrorCode
from protocols.logs import configure_logging
from protocols.results import BalanceResult, MetricsResult, Result

log = structlog.get_logger()

worker_stop_timeout_s: Final = 10.0
live_refreshes_per_s: Final = 4
subscription_pending_msgs_max: Final = 10_000


@dataclass(slots=True)
class DemoResult:
    """What the demo saw and what the ledger says at the end (for ``--json`` and tests)."""

    data_dir: str
    board: AuctionBoard
    start: dict[str, Decimal]
    end: dict[str, Decimal]
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "auctions": [msgspec.to_builtins(a) for a in self.board.auctions.values()],
            "balances": {
                a: {"start": str(self.start.get(a, "")), "end": str(v)} for a, v in self.end.items()
            },
            "metrics": self.metrics,
        }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="exchange demo auction", description=__doc__)
    parser.add_argument("--auctions", type=int, default=6, help="stop after this many closed")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="stop after this long")
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.add_argument("--data", type=Path, help="data directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    parser.add_argument("--open", action="store_true", help="no authentication (loopback)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--dashboard-port",
        type=int,
        default=DASHBOARD_PORT_DEFAULT,
        metavar="N",
        help="serve the live web dashboard here (a free port if taken; -1: none)",
    )
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console(file=stdout or sys.stdout, stderr=False)
    temporary = args.data is None
    data_dir = Path(tempfile.mkdtemp(prefix="exchange-demo-")) if temporary else args.data
    logs_dir = data_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    # The screen is for the auctions: the exchange's own log goes to a file beside the workers'.
    with open(logs_dir / "exchange.log", "a", encoding="utf-8") as log_stream:
        configure_logging(log_format="json", level="info", stream=log_stream)
        try:
            result = anyio.run(_run, args, data_dir, console, backend="asyncio")
        finally:
            if temporary and not args.keep:
                shutil.rmtree(data_dir, ignore_errors=True)
    if result is None:
        console.print("[yellow]interrupted: every worker and the exchange were stopped[/]")
        return 130
    if args.json:
        console.print_json(msgspec.json.encode(result.to_json()).decode())
    elif not temporary or args.keep:
        console.print(
            f"journal and logs kept in {data_dir} (try `exchange doctor --data {data_dir}`)"
        )
    return 0


async def _run(args: argparse.Namespace, data_dir: Path, console: Console) -> DemoResult | None:
    """The demo, or None when a signal (Ctrl-C, SIGTERM) stopped it first."""
    settings = Settings(data_dir=data_dir, nats_port=RANDOM_PORT, open_mode=args.open)
    result: DemoResult | None = None
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            watcher = anyio.CancelScope()

            async def stop_on_signal() -> None:
                with watcher:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            handle: ExchangeHandle = await tg.start(_exchange, settings)
            dashboard = anyio.CancelScope()
            if args.dashboard_port >= 0:
                url = await tg.start(_dashboard, handle, _bind(args), dashboard)
                console.print(f"[bold]dashboard[/] at {url}")
            try:
                result = await _demo(args, handle, console)
            finally:
                dashboard.cancel()
                handle.stop()
                watcher.cancel()
    return result


def _bind(args: argparse.Namespace) -> socket.socket:
    """The dashboard's socket: on ``--dashboard-port``, or any free port when that is taken."""
    try:
        return bind("127.0.0.1", args.dashboard_port)
    except OSError:
        return bind("127.0.0.1", 0)


async def _dashboard(
    handle: ExchangeHandle,
    sock: socket.socket,
    scope: anyio.CancelScope,
    *,
    task_status: TaskStatus[str],
) -> None:
    """The web dashboard, watching as admin, until ``scope`` is cancelled (before the exchange
    stops, so that it does not watch the exchange go)."""
    with scope:
        await run_dashboard(handle.credentials("admin"), sock, task_status=task_status)


async def _exchange(settings: Settings, *, task_status: TaskStatus[ExchangeHandle]) -> None:
    await run_exchange(settings, task_status=task_status)


async def _demo(args: argparse.Namespace, handle: ExchangeHandle, console: Console) -> DemoResult:
    roster = AUCTION_DEMO
    async with connect(handle.credentials("admin"), name="demo") as client:
        await _register(client, roster)
        start = await _balances(client, [a.agent for a in roster])
        board = AuctionBoard()
        console.print(
            f"[bold]exchange[/] at {handle.url} ({'secure' if handle.secure else 'open'} mode), "
            f"data in {handle.data_dir}; starting {len(roster)} workers with seed {args.seed}"
        )
        async with (
            _gateway(handle) as gateway,
            _workers(roster, handle, args.seed, gateway),
        ):
            console.print(f"[bold]gateway[/] at {gateway[0]} meters the analyst's inference")
            await _watch(client, board, args, console)
        end = await _balances(client, [a.agent for a in roster])
        metrics = await _metrics(client)
    roles = {a.agent: a.exchange_role for a in roster}
    if not args.json:
        # Off a terminal, the live view's last frame ends without a line break.
        if not console.is_terminal:
            console.line()
        console.print(render_summary(board))
        console.print(render_balances(start, end, roles))
        console.print(render_metrics(metrics))
    return DemoResult(str(handle.data_dir), board, start, end, metrics)


async def _register(client: ExchangeClient, roster: Sequence[DemoAgent]) -> None:
    for agent in roster:
        try:
            await client.command(
                "admin",
                "agent.register",
                agent.registration(),
                Result,
                request_id=f"demo-register-{agent.agent}",
            )
        except RefusedError as exc:
            if exc.code != ErrorCode.agent_exists.value:
                raise RuntimeError(f"registering {agent.agent} was refused: {exc}") from exc


async def _balances(client: ExchangeClient, agents: Sequence[str]) -> dict[str, Decimal]:
    balances = {}
    for agent in agents:
        try:
            balance = await client.query("balance", {"agent": agent}, BalanceResult)
        except RefusedError:
            continue
        balances[agent] = Decimal(balance.balance)
    return balances


async def _metrics(client: ExchangeClient) -> list[dict[str, Any]]:
    try:
        result = await client.query("metrics", None, MetricsResult)
    except RefusedError:
        return []
    metrics: list[dict[str, Any]] = msgspec.to_builtins(result.metrics)
    return metrics


@asynccontextmanager
async def _gateway(handle: ExchangeHandle) -> AsyncIterator[tuple[str, str]]:
    """The fake upstream model (a process) and the metering gateway in front of it (here);
    yields the gateway's URL and the analyst's key (docs/gateway.md)."""
    async with fake_upstream_process(start_timeout_s=worker_stop_timeout_s) as upstream_url:
        keys = keys_path(handle.data_dir)
        key, _ = issue_key(keys, "analyst")
        sock = bind("127.0.0.1", 0)
        try:
            async with anyio.create_task_group() as tg:
                serve = functools.partial(
                    run_gateway,
                    handle.credentials("gateway"),
                    [parse_upstream(upstream_url)],
                    sock,
                    keys,
                )
                url = await tg.start(serve)
                yield url, key
                tg.cancel_scope.cancel()
        finally:
            sock.close()


@asynccontextmanager
async def _workers(
    roster: Sequence[DemoAgent],
    handle: ExchangeHandle,
    seed: int,
    gateway: tuple[str, str] | None = None,
) -> AsyncIterator[list[Process]]:
    """Starts one process per worker; on exit SIGTERM each and wait, SIGKILL after a bound."""
    logs_dir = handle.data_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    connection = ["--data", str(handle.data_dir)] if handle.secure else ["--nats", handle.url]
    processes: list[Process] = []
    files = []
    try:
        for agent in roster:
            # A child's log is opened once and handed to the process: no async file needed.
            log_file = open(logs_dir / f"{agent.agent}.log", "wb")  # noqa: SIM115, ASYNC230
            files.append(log_file)
            argv = [sys.executable, "-m", "agents", *agent.argv(*connection, seed=seed)]
            env = None
            if gateway is not None and agent.role == "analyst":
                # Its inference goes through the metering gateway; the key stays out of argv.
                argv += ["--gateway", gateway[0]]
                env = {**os.environ, GATEWAY_KEY_ENV: gateway[1]}
            processes.append(
                await anyio.open_process(argv, stdout=log_file, stderr=log_file, env=env)
            )
        yield processes
    finally:
        with anyio.move_on_after(worker_stop_timeout_s + 2, shield=True):
            await _stop_all(processes)
        for log_file in files:
            log_file.close()


async def _stop_all(processes: list[Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.terminate()
    async with anyio.create_task_group() as tg:
        for process in processes:
            tg.start_soon(_reap, process)


async def _reap(process: Process) -> None:
    with anyio.move_on_after(worker_stop_timeout_s):
        await process.wait()
        return
    process.kill()
    await process.wait()


async def _watch(
    client: ExchangeClient, board: AuctionBoard, args: argparse.Namespace, console: Console
) -> None:
    """Folds swarm messages into the board and redraws, until enough auctions have closed."""
    sub = await client.nc.subscribe("swarm.>", pending_msgs_limit=subscription_pending_msgs_max)
    try:
        with (
            Live(
                render_board(board, width_chars=console.width),
                console=console,
                refresh_per_second=live_refreshes_per_s,
                transient=False,
                redirect_stdout=False,
            ) as live,
            anyio.move_on_after(args.timeout_s),
        ):
            async for msg in sub.messages:
                board.observe(msg.subject, msg.data)
                live.update(render_board(board, width_chars=console.width))
                if len(board.closed()) >= args.auctions:
                    break
    finally:
        await sub.unsubscribe()
