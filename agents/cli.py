"""``python -m agents ROLE --id ID [--creds FILE | --data DIR | --nats URL] [--seed N] [options]``.

The composition root of a worker process: parses options, configures logging, builds the role and
the runtime config, and runs the worker until SIGTERM/SIGINT. ``main(argv)`` returns the exit
code, so the exchange CLI can offer ``exchange agent ROLE --id ID ...`` by delegating to it.

Exit codes: 0 after a clean stop, 1 when the connection could not be made or was lost for good,
2 for bad options (including an unreadable credentials file). A bug raises.
"""

import argparse
import random
import secrets
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Final

import anyio
import structlog

from agents.config import DEFAULT_NATS_URL, RuntimeConfig, load_credentials
from agents.errors import ConfigError, ConnectionLostError
from agents.roles import ROLES, BuiltRole
from agents.runtime import run_worker
from protocols.credentials import Credentials
from protocols.logs import LOG_FORMATS, LOG_LEVELS, configure_logging

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
PROG: Final = "python -m agents"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run one worker of the swarm: a separate process that speaks the protocol.",
        # Under the exchange CLI, `exchange agent register ID` (admin) is its sibling.
        epilog=None if prog == PROG else f"{prog} register ID --role ROLE: register an agent first",
    )
    roles = parser.add_subparsers(dest="role", required=True, metavar="ROLE")
    for spec in ROLES.values():
        role_parser = roles.add_parser(spec.name, help=spec.summary, description=spec.summary)
        _add_common_arguments(role_parser)
        spec.add_arguments(role_parser)
    return parser


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    common = parser.add_argument_group("worker")
    common.add_argument("--id", dest="agent_id", required=True, help="the agent's id")
    where = common.add_mutually_exclusive_group()
    where.add_argument("--creds", type=Path, help="credentials file (DATA/creds/<id>.json)")
    where.add_argument("--data", type=Path, help="the exchange's data dir: use its creds/<id>.json")
    where.add_argument(
        "--nats", metavar="URL", help=f"NATS URL in open mode, no credentials ({DEFAULT_NATS_URL})"
    )
    common.add_argument("--seed", type=int, help="seed for the role's randomness (default: random)")
    common.add_argument("--heartbeat-ms", type=int, default=5_000, help="(default: %(default)s)")
    common.add_argument(
        "--request-timeout-ms",
        type=int,
        default=2_000,
        help="wait for one reply before resending (default: %(default)s)",
    )
    common.add_argument(
        "--request-attempts",
        type=int,
        default=5,
        help="sends of one request, same request_id (default: %(default)s)",
    )
    common.add_argument("--reconnect-wait-ms", type=int, default=250, help="(default: %(default)s)")
    common.add_argument(
        "--reconnect-attempts",
        type=int,
        default=-1,
        help="reconnects before giving up; -1: never give up (default: %(default)s)",
    )
    common.add_argument(
        "--shutdown-grace-ms",
        type=int,
        default=5_000,
        help="time to finish in-flight work after SIGTERM (default: %(default)s)",
    )
    common.add_argument("--log-format", choices=LOG_FORMATS, default="auto")
    common.add_argument("--log-level", choices=LOG_LEVELS, default="info")


def _credentials(args: argparse.Namespace) -> Credentials:
    """Raises ConfigError for an unreadable credentials file."""
    if args.creds is not None:
        return load_credentials(args.creds)
    if args.data is not None:
        return load_credentials(args.data / "creds" / f"{args.agent_id}.json")
    return Credentials(url=args.nats or DEFAULT_NATS_URL)


def prepare(args: argparse.Namespace, seed: int) -> tuple[RuntimeConfig, BuiltRole]:
    """The runtime config and the built role for parsed options. Raises ConfigError."""
    spec = ROLES[args.role]
    # Seeded by agent id too, so two executors given the same --seed still differ.
    built = spec.build(args, random.Random(f"{seed}:{args.agent_id}"))
    config = RuntimeConfig(
        agent_id=args.agent_id,
        role=spec.exchange_role,
        capabilities=built.capabilities,
        credentials=_credentials(args),
        heartbeat_interval_ms=args.heartbeat_ms,
        request_timeout_ms=args.request_timeout_ms,
        request_attempts=args.request_attempts,
        reconnect_wait_ms=args.reconnect_wait_ms,
        reconnect_attempts=args.reconnect_attempts,
        shutdown_grace_ms=args.shutdown_grace_ms,
    )
    return config, built


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Runs a worker until it is told to stop; returns the process exit code."""
    try:
        args = build_parser(prog).parse_args(argv)
    except SystemExit as exc:
        # argparse exits for --help (0) and usage errors (2); callers get a code instead.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    try:
        config, built = prepare(args, seed)
    except ConfigError as exc:
        print(f"{prog} {args.role}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(log_format=args.log_format, level=args.log_level)
    log = structlog.get_logger().bind(agent=args.agent_id, role=args.role)
    if config.credentials.user is None:
        log.warning("open_mode_connection", url=config.credentials.url)
    log.info("worker_starting", seed=seed, capabilities=list(config.capabilities))
    try:
        anyio.run(
            partial(run_worker, config, built.worker, log=log, handle_signals=True),
            backend="asyncio",
        )
    except ConnectionLostError as exc:
        log.error("worker_exited", reason=str(exc))
        return EXIT_FAILED
    return EXIT_OK
