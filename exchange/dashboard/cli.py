"""``exchange dashboard``: the live web page of a running exchange, or of a simulation's results.

``exchange dashboard [--data DIR | --nats URL [--creds FILE]] [--host H] [--port N]`` watches an
exchange as admin (or as ``--creds``'s user) and serves the page; ``--sim DIR`` serves the
results of ``exchange simulate --out DIR`` instead. It prints the page's address on start and
runs until Ctrl-C. Errors: exit 2 for bad arguments or an unreadable folder, 3 when no exchange
can be reached (the CLI's statuses), each with a line that says what to do.
"""

import argparse
import functools
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import anyio
import msgspec
from anyio.abc import TaskStatus

from exchange.daemon.creds import CredentialsFileError
from exchange.daemon.endpoint import EndpointFileError
from exchange.dashboard.feed import POLL_INTERVAL_S_DEFAULT, run_feed
from exchange.dashboard.hub import Hub
from exchange.dashboard.model import Board
from exchange.dashboard.server import bind, serve
from exchange.dashboard.simulation import SimulationFolderError, simulation_view
from exchange.locate import DATA_DIR_DEFAULT, LocateError, acting_credentials
from exchange.render import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, fail, parse_or_status
from protocols.client_errors import ExchangeUnavailableError
from protocols.credentials import Credentials
from protocols.logs import configure_logging

__all__ = ["main", "run_dashboard"]

PORT_DEFAULT = 8321
_encoder = msgspec.json.Encoder()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exchange dashboard", description=__doc__)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data", type=Path, default=DATA_DIR_DEFAULT, metavar="DIR", help="the exchange's data"
    )
    source.add_argument("--sim", type=Path, metavar="DIR", help="a simulation's --out folder")
    parser.add_argument("--nats", metavar="URL", help="the NATS server (default: from DIR)")
    parser.add_argument("--creds", type=Path, metavar="FILE", help="watch as this file's user")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=PORT_DEFAULT, help="0: any free port")
    parser.add_argument(
        "--poll-s", type=float, default=POLL_INTERVAL_S_DEFAULT, help="seconds between queries"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    configure_logs: bool = True,
) -> int:
    """``exchange dashboard``; ``configure_logs=False`` leaves logging as the caller set it."""
    out = stdout or sys.stdout
    args = parse_or_status(build_parser(), sys.argv[1:] if argv is None else argv)
    if isinstance(args, int):
        return args
    if configure_logs:
        configure_logging(level="warning", stream=sys.stderr)
    if args.poll_s <= 0:
        return _fail("--poll-s must be above 0 seconds", EXIT_USAGE)
    try:
        if args.sim is not None:
            render = _simulation_render(args.sim)
            credentials = None
        else:
            credentials = _credentials(args)
    except SimulationFolderError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (LocateError, CredentialsFileError, EndpointFileError) as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        return _fail(
            f"cannot listen on {args.host}:{args.port} ({exc}); pick another --port", EXIT_USAGE
        )

    async def run() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:
                if credentials is None:
                    url = await tg.start(serve, Hub(render), sock)
                else:
                    url = await tg.start(run_dashboard, credentials, sock, args.poll_s)
                out.write(f"dashboard at {url} (Ctrl-C to stop)\n")
                out.flush()
                async for _ in signals:
                    tg.cancel_scope.cancel()

    try:
        anyio.run(run, backend="asyncio")
    except ExchangeUnavailableError as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    finally:
        sock.close()
    return EXIT_OK


async def run_dashboard(
    credentials: Credentials,
    sock: socket.socket,
    poll_interval_s: float = POLL_INTERVAL_S_DEFAULT,
    *,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """The live dashboard: the feed, then the server on ``sock``; ``task_status`` gets the URL.

    For callers that run an exchange in the same process (``exchange demo auction``).
    Raises ExchangeUnavailableError when the exchange cannot be reached at first.
    """
    board = Board(started_ms=time.time_ns() // 1_000_000)
    hub = Hub(lambda: _encoder.encode(board.view(now_ms=time.time_ns() // 1_000_000)))
    async with anyio.create_task_group() as tg:
        await tg.start(
            functools.partial(run_feed, credentials, board, hub, poll_interval_s=poll_interval_s)
        )
        url = await tg.start(serve, hub, sock)
        task_status.started(url)


def _simulation_render(folder: Path) -> Callable[[], bytes]:
    document = _encoder.encode(simulation_view(folder, now_ms=time.time_ns() // 1_000_000))
    return lambda: document


def _credentials(args: argparse.Namespace) -> Credentials:
    """Admin's, found as the CLI finds them, or ``--creds``'s, with ``--nats`` as the URL."""
    return acting_credentials(args.nats, args.data, args.creds)


def _fail(message: str, status: int) -> int:
    return fail("exchange dashboard", message, status)
