"""``exchange gateway``: the metering gateway and its keys (docs/gateway.md).

- ``exchange gateway serve --upstream URL [--upstream URL#KEY ...] [--data DIR] [--nats URL]
  [--host H] [--port N] [--workers N]``: serves the OpenAI-compatible API, metering every
  request on the exchange as the ``gateway`` user. Prints ``gateway at http://H:P/v1`` once it
  accepts connections and runs until Ctrl-C. ``--workers N``: N processes on the port
  (``workers``).
- ``exchange gateway key AGENT [--data DIR]``: issues an API key for AGENT and prints it once
  (only its hash is kept, in ``DIR/gateway-keys.json``).
- ``exchange gateway keys [--data DIR]``: lists the keys (id, agent, created, revoked).
- ``exchange gateway revoke KEY_ID [--data DIR]``: revokes a key; a running gateway stops
  accepting it within a second.

Exit statuses as the CLI's: 2 bad arguments, 3 no exchange reachable.
"""

import argparse
import functools
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TextIO

import aiohttp
import anyio
import msgspec
import uvicorn
from anyio.abc import TaskGroup, TaskStatus

from exchange.daemon.creds import CredentialsFileError, read_credentials
from exchange.daemon.endpoint import EndpointFileError
from exchange.daemon.settings import DataPaths
from exchange.gateway.app import Gateway
from exchange.gateway.keys import KeyRing, KeysError, issue_key, keys_path, read_keys, revoke_key
from exchange.gateway.meter import Meter
from exchange.gateway.quotas import Admission
from exchange.gateway.tokens import DEFAULT_MAX_TOKENS
from exchange.gateway.upstreams import Upstream, Upstreams, parse_upstream
from exchange.gateway.workers import (
    START_TIMEOUT_S,
    WorkersError,
    shared_sockets,
    supervise,
    until_stdin_closes,
)
from exchange.listen import listening_socket, url_of
from exchange.locate import DATA_DIR_DEFAULT, LocateError, locate
from exchange.render import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    fail,
    parse_or_status,
)
from protocols.client import connect
from protocols.client_errors import ExchangeUnavailableError
from protocols.credentials import Credentials
from protocols.ids import GATEWAY
from protocols.logs import configure_logging

PORT_DEFAULT = 8400
# Upper bound of one upstream call; the hold outlives it by a margin, then expires (voided).
UPSTREAM_TIMEOUT_S = 600.0
HOLD_MARGIN_S = 60
# Upstream calls at once (connections of the pool, kept alive), all upstreams together.
UPSTREAM_CONNECTIONS_MAX = 1024
# The longest line of an upstream's event stream (one streamed chunk) the gateway reads.
STREAM_LINE_BYTES_MAX = 1 << 20
# How long a stopping gateway lets in-flight requests finish.
SHUTDOWN_TIMEOUT_S = 10
# Connections waiting to be accepted, per listening socket.
BACKLOG = 2048


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exchange gateway", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    serve = sub.add_parser("serve", help="serve the metered OpenAI-compatible API")
    serve.add_argument(
        "--upstream",
        action="append",
        required=True,
        metavar="URL[#KEY]",
        help="an OpenAI-compatible base URL (repeat for several); #KEY: its API key",
    )
    serve.add_argument("--nats", metavar="URL", help="the NATS server (default: from DIR)")
    serve.add_argument("--creds", type=Path, metavar="FILE", help="default: DIR/creds/gateway.json")
    serve.add_argument("--host", default="127.0.0.1", help="address to serve on")
    serve.add_argument("--port", type=int, default=PORT_DEFAULT, help="0: any free port")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serving processes sharing the port (Linux), each with its own quotas: one per "
        "core the gateway may use",
    )
    # A worker of `--workers N`: the listening socket its supervisor passed (file descriptor).
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument(
        "--default-max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help="completion tokens held (and sent upstream) for a request that names none",
    )
    key = sub.add_parser("key", help="issue an API key for AGENT (printed once)")
    key.add_argument("agent")
    sub.add_parser("keys", help="list the keys")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    for child in sub.choices.values():
        child.add_argument(
            "--data", type=Path, default=DATA_DIR_DEFAULT, metavar="DIR", help="the exchange's data"
        )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    configure_logs: bool = True,
) -> int:
    """``exchange gateway``; ``configure_logs=False`` leaves logging as the caller set it."""
    out = stdout or sys.stdout
    args = parse_or_status(build_parser(), sys.argv[1:] if argv is None else argv)
    if isinstance(args, int):
        return args
    path = keys_path(args.data)
    try:
        if args.action == "key":
            key, record = issue_key(path, args.agent)
            out.write(f"{key}\n")
            sys.stderr.write(
                f"key {record.key_id} for {record.agent}: shown once, only its hash is kept "
                f"({path}); revoke with `exchange gateway revoke {record.key_id}`\n"
            )
            return EXIT_OK
        if args.action == "keys":
            for k in read_keys(path).keys:
                state = "revoked" if k.revoked else "active"
                out.write(f"{k.key_id}\t{k.agent}\t{k.created_at_s}\t{state}\n")
            return EXIT_OK
        if args.action == "revoke":
            revoked = revoke_key(path, args.key_id)
            out.write(f"revoked {revoked.key_id} ({revoked.agent})\n")
            return EXIT_OK
    except KeysError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if configure_logs:
        configure_logging(level="warning", stream=sys.stderr)
    try:
        upstreams = [parse_upstream(spec) for spec in args.upstream]
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        credentials = gateway_credentials(args.nats, args.data, args.creds)
    except (LocateError, CredentialsFileError, EndpointFileError) as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    if args.workers < 1:
        return _fail("--workers is at least 1", EXIT_USAGE)
    try:
        if args.workers > 1:
            sockets = shared_sockets(args.host, args.port, args.workers, backlog=BACKLOG)
            return _supervise(args, sockets, out)
        if args.listen_fd is not None:
            sock = socket.socket(fileno=args.listen_fd)
            sock.setblocking(False)
        else:
            sock = bind(args.host, args.port)
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port} ({exc}); pick another --port", 2)

    async def run() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:
                serve = functools.partial(
                    run_gateway,
                    credentials,
                    upstreams,
                    sock,
                    path,
                    default_max_tokens=args.default_max_tokens,
                )
                url = await tg.start(serve)
                out.write(f"gateway at {url} (Ctrl-C to stop)\n")
                out.flush()
                if args.listen_fd is not None:
                    # A worker: its supervisor going away (the pipe closing) stops it too.
                    tg.start_soon(_stop_when, until_stdin_closes(sys.stdin.fileno()), tg)
                async for _ in signals:
                    tg.cancel_scope.cancel()

    try:
        anyio.run(run, backend="asyncio", backend_options={"use_uvloop": _has_uvloop()})
    except ExchangeUnavailableError as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    finally:
        sock.close()
    return EXIT_OK


async def _stop_when(event: Awaitable[None], tg: TaskGroup) -> None:
    await event
    tg.cancel_scope.cancel()


def _supervise(args: argparse.Namespace, sockets: list[socket.socket], out: TextIO) -> int:
    """``--workers N``: N worker processes, one per socket (see ``workers``)."""

    def argv_for(fd: int) -> list[str]:
        argv = [sys.executable, "-m", "exchange.cli.main", "gateway", "serve"]
        argv += ["--listen-fd", str(fd), "--data", str(args.data)]
        argv += ["--default-max-tokens", str(args.default_max_tokens)]
        for spec in args.upstream:
            argv += ["--upstream", spec]
        if args.nats is not None:
            argv += ["--nats", args.nats]
        if args.creds is not None:
            argv += ["--creds", str(args.creds)]
        return argv

    def announce(url: str, workers: int) -> None:
        out.write(f"gateway at {url} ({workers} workers; Ctrl-C to stop)\n")
        out.flush()

    supervising = functools.partial(
        supervise, argv_for, sockets, announce, stop_timeout_s=SHUTDOWN_TIMEOUT_S + 5
    )
    try:
        anyio.run(supervising, backend="asyncio")
    except WorkersError as exc:
        return _fail(str(exc), exc.status)
    except TimeoutError:  # before OSError, its base class
        return _fail(f"the workers did not all serve within {START_TIMEOUT_S:g} s", EXIT_REFUSED)
    except OSError as exc:
        return _fail(f"cannot start a worker: {exc}", EXIT_REFUSED)
    return EXIT_OK


def _has_uvloop() -> bool:
    """uvloop when installed (less CPU per request; the dev extra has it), else asyncio's loop."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def gateway_credentials(nats_url: str | None, data_dir: Path, creds: Path | None) -> Credentials:
    """The gateway user's credentials (``DIR/creds/gateway.json``, written by ``exchange up``),
    with the URL the CLI would use; open mode: just the URL."""
    located = locate(nats_url, data_dir).credentials
    path = creds or DataPaths(data_dir).creds(GATEWAY)
    found = read_credentials(path)
    if found is None:
        if located.user is None:
            return located  # open mode: no credentials at all
        raise CredentialsFileError(
            f"{path}: no gateway credentials; `exchange up` writes them (restart it once after "
            "upgrading), or pass --creds"
        )
    return msgspec.structs.replace(found, url=located.url)


def bind(host: str, port: int) -> socket.socket:
    return listening_socket(host, port, backlog=BACKLOG)


async def run_gateway(
    credentials: Credentials,
    upstreams: list[Upstream],
    sock: socket.socket,
    keys: Path,
    *,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    keys_reload_s: float = 1.0,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """The gateway on ``sock`` until cancelled; ``task_status`` gets its base URL (``.../v1``).

    Cancelling it stops it cleanly: the server finishes its in-flight requests (and their
    settles), then the NATS and upstream connections close, all shielded from the cancellation.
    Raises ExchangeUnavailableError when the exchange cannot be reached at first."""
    stop = anyio.Event()
    body = functools.partial(
        _serve,
        credentials,
        upstreams,
        sock,
        keys,
        stop,
        default_max_tokens=default_max_tokens,
        keys_reload_s=keys_reload_s,
    )
    async with anyio.create_task_group() as tg:
        task_status.started(await tg.start(body))
        try:
            await anyio.sleep_forever()
        finally:
            stop.set()


async def _serve(
    credentials: Credentials,
    upstreams: list[Upstream],
    sock: socket.socket,
    keys: Path,
    stop: anyio.Event,
    *,
    default_max_tokens: int,
    keys_reload_s: float,
    task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with anyio.CancelScope(shield=True):
        async with (
            connect(credentials, name="exchange-gateway") as client,
            _upstream_session() as session,
        ):
            routes = Upstreams(upstreams, session)
            await routes.discover()
            meter = Meter(client, hold_timeout_s=int(UPSTREAM_TIMEOUT_S) + HOLD_MARGIN_S)
            admission = Admission(meter)
            ring = KeyRing(keys, reload_s=keys_reload_s)
            gateway = Gateway(ring, admission, routes, default_max_tokens=default_max_tokens)
            config = uvicorn.Config(
                gateway.app(),
                log_level="warning",
                access_log=False,
                lifespan="off",
                # Per-request work the gateway has no use for: it is reached directly (no
                # proxy's X-Forwarded-For to trust), and its answers need no Server or Date.
                proxy_headers=False,
                server_header=False,
                date_header=False,
                timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S,
            )
            server = uvicorn.Server(config)
            async with anyio.create_task_group() as settling:
                settling.start_soon(admission.run)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(functools.partial(server.serve, sockets=[sock]))
                    # The socket already listens: a connection made now waits in its backlog
                    # until the server accepts it, so the gateway is reachable from here on.
                    task_status.started(url_of(sock, "/v1"))
                    await stop.wait()
                    server.should_exit = True
                # The server has finished its requests (or given up on them): no ticket is open.
                settling.cancel_scope.cancel()
            await admission.drain(SHUTDOWN_TIMEOUT_S)


def _upstream_session() -> aiohttp.ClientSession:
    """One pooled client for every upstream. aiohttp rather than httpx: at 32 requests in flight
    httpx cost ~3.7 ms of CPU per call (its pool scans its connections on every request), aiohttp
    ~0.25 ms, measured against the fake upstream on this project's 2-core machine. Each upstream
    carries its proxy from the environment (``Upstream.proxy``), so the session does not look."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=UPSTREAM_CONNECTIONS_MAX, ssl=ssl.create_default_context()
        ),
        timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S, connect=10.0),
        read_bufsize=STREAM_LINE_BYTES_MAX,
        trust_env=False,
    )


def _fail(message: str, status: int) -> int:
    return fail("exchange gateway", message, status)
